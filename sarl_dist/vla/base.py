"""The VLA interface: openpi's BasePolicy (observation dict -> {"actions": chunk}).

Any openpi policy or client (WebsocketClientPolicy, the skill VLA) plugs in unchanged;
ChunkedVLA adds what a rollout needs on top: replanning every `replan_steps` actions,
lazy observations (nothing is rendered while queued actions remain) and a strict
check of every chunk, so a wrong server fails loudly instead of moving the arm wrongly.

A policy may also offer `infer_batch` (BatchedPolicy): the policy server then answers
the concurrent requests of many workers with one call (vla/server.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np


class VLAError(RuntimeError):
    """The VLA answered something a robot must not execute."""


@runtime_checkable
class VLAPolicy(Protocol):
    def infer(self, obs: dict[str, Any]) -> dict[str, Any]: ...

    def reset(self) -> None: ...


@runtime_checkable
class BatchedPolicy(VLAPolicy, Protocol):
    """A VLAPolicy that also answers several observations in one call, shaped like openpi's
    proposed `Policy.infer_batch`: one reply per observation, in order, each what `infer`
    would answer for that observation alone. A large model computes a batch in about the
    time of one observation, so the policy server gathers concurrent requests into it."""

    def infer_batch(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]: ...


class ChunkedVLA:
    def __init__(self, policy: VLAPolicy, replan_steps: int, action_dim: int) -> None:
        self.policy, self.replan_steps, self.action_dim = policy, replan_steps, action_dim
        self._queue: deque[np.ndarray] = deque()
        self.infer_seconds = 0.0
        self._served: list[dict] = []  # the server_timing of each reply since the last drain

    def reset(self) -> None:
        """Drop queued actions: a new prompt must not inherit the old prompt's chunk."""
        self._queue.clear()
        self.policy.reset()

    def next_action(self, observe: Callable[[], dict[str, Any]]) -> np.ndarray:
        if not self._queue:
            obs = observe()
            start = time.perf_counter()
            reply = self.policy.infer(obs)
            self.infer_seconds += time.perf_counter() - start
            if isinstance(reply, dict) and isinstance(reply.get("server_timing"), dict):
                self._served.append(reply["server_timing"])
            self._queue.extend(self._check(reply)[: self.replan_steps])
        return self._queue.popleft()

    def server_timing(self) -> dict[str, float] | None:
        """How a policy server served the requests since the last call: their number, the
        median queue wait and compute, the mean batch size, each where the replies report
        it (openpi's server reports only infer_ms); None when none carried server_timing
        (an in-process VLA)."""
        served, self._served = self._served, []
        if not served:
            return None
        figures: dict[str, float] = {"requests": len(served)}
        for key, name, summary in (
            ("queue_ms", "queue_ms", np.median),
            ("infer_ms", "compute_ms", np.median),
            ("batch_size", "batch_size", np.mean),
        ):
            values = [t[key] for t in served if isinstance(t.get(key), int | float)]
            if values:
                figures[name] = float(summary(values))
        return figures

    def _check(self, reply: Any) -> np.ndarray:
        if not isinstance(reply, dict) or "actions" not in reply:
            raise VLAError(f"VLA reply has no 'actions' (got {type(reply).__name__})")
        actions = np.asarray(reply["actions"], dtype=np.float32)
        if actions.ndim == 1:
            actions = actions[None]
        if actions.ndim != 2 or actions.shape[1] != self.action_dim or len(actions) == 0:
            raise VLAError(
                f"VLA returned actions of shape {actions.shape}, "
                f"expected (chunk, {self.action_dim})"
            )
        if not np.isfinite(actions).all():
            raise VLAError("VLA returned non-finite actions")
        return actions
