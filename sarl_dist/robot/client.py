"""The learner's side of the robot server (sarl_dist/robot/server.py).

Connecting retries with backoff until `connect_timeout` (a robot server still starting is
normal); a refused API key fails at once. Every command waits at most `request_timeout`
for its reply, and every failure is a RobotError naming the server. A request that times
out closes the connection: its late reply would otherwise answer the next request, and
the server stops the arm when a connection drops mid-execute, which is what a learner
that stopped listening should get. Not thread-safe: one client per thread (a driver
keeps its own for stop and success marks, so they never queue behind a running chunk).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import websockets

from sarl_dist import wire

SERVER = "robot server"


class RobotError(RuntimeError):
    """The robot server refused, failed or did not answer; the message names it."""


class RobotConnectionLostError(RobotError):
    """The connection closed; the episode in progress is void (the arm has stopped)."""


class RobotClient:
    def __init__(
        self,
        address: str,
        api_key: str | None = None,
        connect_timeout: float = 30.0,
        request_timeout: float = 30.0,
    ) -> None:
        self.address, self.request_timeout = address, request_timeout
        try:
            self._ws, metadata = wire.connect(address, api_key, connect_timeout, SERVER)
        except (ConnectionError, ValueError) as exc:  # unreachable, key refused, bad address
            raise RobotError(str(exc)) from None
        if "error" in metadata:
            self._ws.close()
            raise self._fail(str(metadata["error"]))
        self.metadata: dict[str, Any] = metadata

    def _fail(self, message: str) -> RobotError:
        return RobotError(f"robot server {self.address}: {message}")

    def _receive(self) -> dict[str, Any]:
        try:
            frame = self._ws.recv(timeout=self.request_timeout)
        except TimeoutError:
            self._ws.close()
            raise RobotConnectionLostError(
                f"robot server {self.address}: no reply within {self.request_timeout:g}s; "
                "connection closed"
            ) from None
        except websockets.ConnectionClosed as exc:
            raise RobotConnectionLostError(
                f"robot server {self.address}: connection lost ({exc})"
            ) from None
        if isinstance(frame, str):
            raise self._fail(f"unexpected text frame: {frame[:200]}")
        try:
            reply = wire.unpack(frame)
        except wire.WireError as exc:
            raise self._fail(f"refused reply ({exc})") from None
        if not isinstance(reply, dict):
            raise self._fail(f"unexpected reply of type {type(reply).__name__}")
        if "error" in reply:
            raise self._fail(str(reply["error"]))
        return reply

    def _call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        try:
            self._ws.send(wire.pack({"cmd": cmd, **fields}))
        except websockets.ConnectionClosed as exc:
            raise RobotConnectionLostError(
                f"robot server {self.address}: connection lost ({exc})"
            ) from None
        return self._receive()

    def begin_episode(self, seed: int) -> dict[str, Any]:
        return self._call("begin_episode", seed=int(seed))

    def execute(self, actions: np.ndarray) -> dict[str, Any]:
        """Run a chunk of actions (n, action_dim) in order; the reply says how many ran."""
        return self._call("execute", actions=np.asarray(actions, np.float32))

    def home(self, max_steps: int) -> dict[str, Any]:
        return self._call("home", max_steps=int(max_steps))

    def stop(self) -> dict[str, Any]:
        return self._call("stop")

    def mark_success(self) -> dict[str, Any]:
        return self._call("success")

    def status(self) -> dict[str, Any]:
        return self._call("status")

    def end_episode(self, success: bool, reason: str) -> dict[str, Any]:
        """Tell the robot side how the episode ended (it logs it)."""
        return self._call("end_episode", success=bool(success), reason=str(reason)[:200])

    def close(self) -> None:
        self._ws.close()
