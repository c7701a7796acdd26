"""Where a run's actors live: Ray processes, or this one process (`runtime.mode: local`).

The driver, the workers and the Learner talk to each other through actor handles and
object references, as Ray's API has them: `handle.method.remote(...)` returns a
reference, `get` fetches it, `wait` finds the finished ones, `put` stores a value. In
local mode a handle wraps the object itself: a call runs at once (an async method on
that actor's own event loop, on a thread of its own, as Ray runs an async actor) and its
reference holds the result, or the exception as a RayTaskError, so the driver's
fault handling reads the same. The code that uses them is the same in both modes, which
is the point: one process to step through with pdb or a profiler, or many on a cluster.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import traceback
from collections.abc import Sequence
from typing import Any

import ray


class LocalRef:
    """A finished call's result (or exception), as an object reference."""

    _next = 0

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        LocalRef._next += 1
        self._id = f"local-{LocalRef._next}"

    def hex(self) -> str:
        return self._id


class _Method:
    def __init__(self, actor: LocalActor, name: str) -> None:
        self._actor, self._name = actor, name

    def remote(self, *args: Any, **kwargs: Any) -> LocalRef | tuple[LocalRef, ...]:
        fn = getattr(self._actor.obj, self._name)
        returns = getattr(fn, "__ray_num_returns__", 1)
        try:
            result = self._actor.run(fn, *args, **kwargs)
        except Exception as exc:  # as Ray delivers it: the call's error, at get()
            error = ray.exceptions.RayTaskError(
                self._name, traceback.format_exc(), exc, proctitle="local", ip="127.0.0.1"
            ).as_instanceof_cause()
            return LocalRef(error=error) if returns == 1 else (LocalRef(error=error),) * returns
        if returns == 1:
            return LocalRef(result)
        return tuple(LocalRef(v) for v in result)


class LocalActor:
    """An object in this process behind an actor handle."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self._loop: asyncio.AbstractEventLoop | None = None

    def __getattr__(self, name: str) -> _Method:
        return _Method(self, name)

    def run(self, fn, *args: Any, **kwargs: Any) -> Any:
        args = tuple(get(a) if isinstance(a, LocalRef) else a for a in args)
        if not inspect.iscoroutinefunction(fn):
            return fn(*args, **kwargs)
        if self._loop is None:  # one loop for the actor's life, as Ray's async actors have
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, daemon=True).start()
        return asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop).result()


def get(refs: Any, timeout: float | None = None) -> Any:
    """ray.get for Ray's references and local ones alike (a list gets a list)."""
    if isinstance(refs, list):
        return [get(r, timeout) for r in refs]
    if isinstance(refs, LocalRef):
        if refs.error is not None:
            raise refs.error
        return refs.value
    return ray.get(refs, timeout=timeout)


def wait(refs: Sequence, num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
    """ray.wait; local references are always ready."""
    if refs and all(isinstance(r, LocalRef) for r in refs):
        return list(refs[:num_returns]), list(refs[num_returns:])
    return ray.wait(list(refs), num_returns=num_returns, timeout=timeout)


def put(value: Any) -> Any:
    """ray.put where Ray runs (an actor, a Ray driver); a local reference otherwise."""
    return ray.put(value) if ray.is_initialized() else LocalRef(value)


def kill(handle: Any) -> None:
    if isinstance(handle, LocalActor):
        stop = getattr(handle.obj, "stop", None) or getattr(handle.obj, "close", None)
        if callable(stop):
            stop()
        return
    ray.kill(handle)
