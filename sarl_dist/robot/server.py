"""The robot server: one arm on the robot's PC, driven over websockets + msgpack.

After the handshake the server sends one msgpack frame of metadata (robot, action_dim,
cameras, state_dim, limits). Each request is a msgpack map {"cmd": ...}; each reply a
msgpack map; a bad request is answered {"error": ...} and the connection stays open.

- begin_episode {seed}: clears the stop and success flags; the backend begins an episode.
- execute {actions: (n, action_dim), n <= max_chunk}: each action through `Safety`, then
  to the arm, until the chunk ends or a stop or success mark arrives.
- home {max_steps}: the reset-to-home action.
- stop: halts the arm at once; execute and home do nothing until the next begin_episode.
- success: the person (or a robot-side button) marks success; the chunk in progress ends.
- status: the flags; episodes begun, steps in this one, stops, clipped actions (since
  start) and open connections.
- end_episode {success, reason}: the learner's verdict on the episode, logged here.

Episode starts and ends are logged at INFO, so the robot PC's log reads as a session.

execute, home and begin_episode answer {"observation", "steps", "success", "stopped",
"clipped": [safety events]}. Backend calls run, one at a time, on one thread of their
own (hardware stacks and simulators tie state to a thread), so a second connection's
stop or success mark is handled while a chunk runs; stop alone is called from elsewhere.
Safety stays here, on the robot side: a connection that closes mid-execute stops the arm
(dead-man), as do a backend failure, the episode's wall-clock cap and the server
shutting down. Every clipped action is logged at WARNING.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.server import ServerConnection

from sarl_dist.robot.backends import RobotBackend
from sarl_dist.robot.safety import Safety
from sarl_dist.wire import MsgpackServer, pack, unpack

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A malformed or refused request: answered with an error, nothing moved."""


class RobotServer(MsgpackServer):
    kind = "robot server"

    def __init__(
        self,
        backend: RobotBackend,
        safety: Safety,
        host: str = "127.0.0.1",
        port: int = 8765,
        api_key: str | None = None,
    ) -> None:
        if safety.action_dim != backend.action_dim:
            raise ValueError(
                f"safety limits have {safety.action_dim} action dimensions, "
                f"robot {backend.name} takes {backend.action_dim}"
            )
        super().__init__(host, port, api_key)
        self.backend, self.safety = backend, safety
        limits = safety.cfg
        self.metadata = {
            "robot": backend.name,
            "action_dim": backend.action_dim,
            "cameras": list(backend.cameras),
            "state_dim": backend.state_dim,
            "limits": {
                "action_low": list(limits.action_low),
                "action_high": list(limits.action_high),
                "workspace_low": list(limits.workspace_low),
                "workspace_high": list(limits.workspace_high),
                "max_chunk": limits.max_chunk,
            },
        }
        self._backend_thread = ThreadPoolExecutor(1, thread_name_prefix="robot-backend")
        self._stopped, self._success = threading.Event(), threading.Event()
        self._stops_lock = threading.Lock()
        self._episode = False
        self._started = 0.0
        self._episodes = self._steps = self._stops = self._clipped = self._connections = 0

    # ---------------------------------------------------------------- connection
    async def handle(self, ws: ServerConnection) -> None:
        self._connections += 1
        log.info("client %s connected", ws.remote_address)
        try:
            await ws.send(pack(self.metadata))
            while True:
                frame = await ws.recv()
                try:
                    reply = await self._dispatch(ws, frame)
                except RequestError as exc:
                    log.warning("refused a request: %s", exc)
                    reply = {"error": str(exc)}
                except Exception as exc:
                    log.exception("the robot failed")
                    self._halt(f"the robot failed: {type(exc).__name__}: {exc}")
                    reply = {"error": f"robot failed, arm stopped: {type(exc).__name__}: {exc}"}
                await ws.send(self._pack(reply))
        except websockets.ConnectionClosed:
            pass
        finally:
            self._connections -= 1
            log.info("client %s disconnected", ws.remote_address)

    @staticmethod
    def _pack(reply: dict[str, Any]) -> bytes:
        try:
            return pack(reply)
        except (TypeError, ValueError) as exc:  # a backend's observation msgpack cannot hold
            log.error("cannot encode a reply: %s", exc)
            return pack({"error": f"cannot encode the reply: {exc}"})

    async def _dispatch(self, ws: ServerConnection, frame: str | bytes) -> dict[str, Any]:
        if isinstance(frame, str):
            raise RequestError("expected a binary msgpack frame, got text")
        try:
            request = unpack(frame)
        except Exception as exc:
            raise RequestError(f"undecodable frame ({type(exc).__name__}: {exc})") from None
        if not isinstance(request, dict):
            raise RequestError(f"expected a map {{'cmd': ...}}, got {type(request).__name__}")
        cmd = request.get("cmd")
        if cmd == "execute":
            return await self._execute_guarded(ws, self._actions(request))
        if cmd == "begin_episode":
            return await self._on_backend(self._begin_episode, _integer(request, "seed"))
        if cmd == "home":
            return await self._on_backend(self._home, _integer(request, "max_steps"))
        if cmd == "stop":
            self._halt(f"stop requested by {ws.remote_address}")
            return {"stopped": True}
        if cmd == "success":
            self._success.set()
            log.info("success marked by %s", ws.remote_address)
            return {"success": True}
        if cmd == "end_episode":
            log.info(
                "episode %d ended after %d steps: %s (%s)",
                self._episodes,
                self._steps,
                "success" if request.get("success") is True else "failure",
                str(request.get("reason", ""))[:200],
            )
            return {"ended": True}
        if cmd == "status":
            return {
                "stopped": self._stopped.is_set(),
                "success": self._success.is_set(),
                "episodes": self._episodes,
                "steps": self._steps,
                "stops": self._stops,
                "clipped": self._clipped,
                "connections": self._connections,
            }
        raise RequestError(
            f"unknown cmd {cmd!r}: use begin_episode, execute, home, stop, success, status "
            "or end_episode"
        )

    def _actions(self, request: dict[str, Any]) -> np.ndarray:
        """The chunk, refused whole before anything moves if any of it is malformed."""
        dim, most = self.backend.action_dim, self.safety.cfg.max_chunk
        try:
            actions = np.asarray(request["actions"], np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestError(f"execute needs actions (n, {dim}) of numbers ({exc})") from None
        if actions.ndim != 2 or actions.shape[1] != dim or not 1 <= len(actions) <= most:
            raise RequestError(
                f"actions of shape {actions.shape}: expected (n, {dim}) with 1 <= n <= {most}"
            )
        if not np.isfinite(actions).all():
            raise RequestError("actions hold non-finite values (NaN or inf); nothing executed")
        return actions

    async def _execute_guarded(self, ws: ServerConnection, actions: np.ndarray) -> dict[str, Any]:
        """Run the chunk on a worker thread; the arm stops if the client goes away meanwhile."""
        work = asyncio.ensure_future(self._on_backend(self._execute, actions))
        closed = asyncio.ensure_future(ws.wait_closed())
        try:
            await asyncio.wait((work, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not work.done():
                self._halt(f"connection to {ws.remote_address} lost mid-execute (dead-man)")
        return await work

    async def _on_backend(self, fn, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._backend_thread, fn, *args)

    def _halt(self, reason: str) -> None:
        """Stop the arm now, from any thread, without waiting for the backend lock."""
        self._stopped.set()
        with self._stops_lock:
            self._stops += 1
        log.warning("stopping the arm: %s", reason)
        try:
            self.backend.stop()
        except Exception:
            log.exception("the robot's stop() failed")

    # ---------------------------------------------------------------- the backend's thread
    def _reply(self, steps: int, events: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "observation": self.backend.observe(),
            "steps": steps,
            "success": self._success.is_set(),
            "stopped": self._stopped.is_set(),
            "clipped": events,
        }

    def _require_episode(self) -> None:
        if not self._episode:
            raise RequestError("no episode in progress: send begin_episode first")

    def _begin_episode(self, seed: int) -> dict[str, Any]:
        self._stopped.clear()
        self._success.clear()
        self._episode, self._steps = False, 0
        self.backend.begin_episode(seed)
        self._episode, self._started = True, time.monotonic()
        self._episodes += 1
        log.info("episode %d began (seed %d)", self._episodes, seed)
        return self._reply(0, [])

    def _execute(self, actions: np.ndarray) -> dict[str, Any]:
        cap = self.safety.cfg.max_episode_seconds
        self._require_episode()
        done, events = 0, []
        for action in actions:
            if self._stopped.is_set() or self._success.is_set():
                break
            if time.monotonic() - self._started > cap:
                self._halt(f"the episode ran past max_episode_seconds={cap:g}")
                break
            executed, changed = self.safety.apply(action, self.backend.eef_pos(), self._steps)
            for event in changed:
                log.warning(
                    "step %d: %s on dims %s: %s -> %s",
                    event["step"],
                    event["reason"],
                    event["dims"],
                    event["action"],
                    event["executed"],
                )
            events += changed
            self._clipped += len(changed)
            self.backend.apply(executed)
            self._steps += 1
            done += 1
        return self._reply(done, events)

    def _home(self, max_steps: int) -> dict[str, Any]:
        self._require_episode()
        if self._stopped.is_set():
            return self._reply(0, [])
        steps = self.backend.home(max_steps)
        self._steps += steps
        return self._reply(steps, [])

    async def serve_async(self) -> None:
        try:
            await super().serve_async()
        finally:
            self._halt("the robot server is shutting down")
            self._backend_thread.shutdown(wait=False)


def _integer(request: dict[str, Any], key: str) -> int:
    value = request.get(key)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise RequestError(f"{request.get('cmd')} needs {key}: a non-negative integer")
    return int(value)
