"""The VLA client: openpi's websocket protocol with what a long run needs.

It speaks exactly what openpi-client's WebsocketClientPolicy speaks (an optional
`Authorization: Api-Key` header, a metadata frame, one msgpack-numpy frame per request,
a text frame for an error), so it talks to openpi's own server as to the project's; but
replies are read by `wire.unpack`, which builds only plain arrays (openpi-client's
decoder builds any dtype a server sends). On top: connection retries with backoff until
a deadline (a server still loading a checkpoint is normal), a check of the server's
metadata against what the run expects, and every failure as a VLAError naming the server.

A connection lost mid-request (a network drop, a restarted server) is re-opened at once,
with the same backoff, and reported as VLAConnectionLostError: the VLA's state for the
episode in progress is gone, so that episode is void and is run again. Given other
servers (replicas), a client whose server stays away past `failover_after` seconds moves
to the first of them that accepts a connection, and the dead one goes to the back of its
list; with no server left, or none besides, it is a plain VLAError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import websockets
from websockets.sync.client import ClientConnection

from sarl_dist import wire
from sarl_dist.vla.base import VLAError

log = logging.getLogger(__name__)
# websockets logs every handshake header at DEBUG, the API key included: never below INFO.
logging.getLogger("websockets").setLevel(logging.INFO)
REQUEST_REFUSED = (1009, 1011)  # close codes: frame too big, policy error (not a lost link)
SERVER = "policy server"


class VLAConnectionLostError(VLAError):
    """The connection dropped mid-request and has been re-opened; the episode is void."""


def _uri(host: str, port: int) -> str:
    return host if host.startswith("ws") else f"ws://{host}:{port}"


def metadata_check(action_dim: int, replan_steps: int) -> Callable[[dict], str | None]:
    """What a run needs of a server's metadata, where the server announces it: chunks as
    wide as the environment's actions, at least as long as the run executes of each."""

    def check(metadata: dict) -> str | None:
        dim, horizon = metadata.get("action_dim"), metadata.get("action_horizon")
        if dim is not None and dim != action_dim:
            return f"action_dim={dim!r}, the environment takes {action_dim}"
        if horizon is not None and (not isinstance(horizon, int) or horizon < replan_steps):
            return f"action_horizon={horizon!r}, shorter than vla.replan_steps={replan_steps}"
        return None

    return check


class WebsocketVLA:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        connect_timeout: float = 30.0,
        expect_metadata: Callable[[dict], str | None] | None = None,
        others: Sequence[tuple[str, int]] = (),
        failover_after: float = 10.0,
    ) -> None:
        self._servers = [(host, port), *others]  # the one in use first
        self._api_key, self._timeout = api_key, connect_timeout
        self._failover_after = failover_after
        self._check = expect_metadata
        self._ws: ClientConnection | None = None
        self._open(connect_timeout)

    @property
    def uri(self) -> str:
        """The server in use."""
        return _uri(*self._servers[0])

    def _open(self, timeout: float) -> None:
        """Connect to the server in use within `timeout`, else to the first other one that
        accepts at once (it becomes the one in use, the unreachable ones go last)."""
        errors = []
        for i, address in enumerate(self._servers):
            try:
                ws, metadata = wire.connect(
                    _uri(*address), self._api_key, timeout if i == 0 else 0.0, SERVER
                )
            except wire.UnreachableError as exc:
                errors.append(str(exc))
                continue
            except (wire.KeyRefusedError, ValueError) as exc:  # WireError is a ValueError
                raise VLAError(str(exc)) from None
            self._servers = self._servers[i:] + self._servers[:i]
            if i:
                log.warning("moved from unreachable policy servers to %s", self.uri)
            self._ws, self.metadata = ws, metadata
            break
        else:
            raise VLAError("; ".join(errors))
        problem = self._check(self.metadata) if self._check else None
        if problem:
            self.close()
            raise VLAError(f"policy server {self.uri} reports {problem}")

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        try:
            self._ws.send(wire.pack(obs))
            frame = self._ws.recv()
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code in REQUEST_REFUSED:
                raise VLAError(f"policy server {self.uri} refused the request: {exc}") from None
            self._reconnect(exc)
        except OSError as exc:
            self._reconnect(exc)
        if isinstance(frame, str):  # openpi's way of reporting an error
            raise VLAError(f"policy server {self.uri} failed: {frame[:2000]}")
        try:
            reply = wire.unpack(frame)
        except wire.WireError as exc:
            raise VLAError(f"policy server {self.uri} sent a refused frame: {exc}") from None
        if not isinstance(reply, dict):
            raise VLAError(f"policy server {self.uri} answered a {type(reply).__name__}, not a map")
        return reply

    def _reconnect(self, cause: BaseException) -> None:
        lost = self.uri
        log.warning("lost the policy server %s (%s); reconnecting", lost, cause)
        self._open(self._failover_after if len(self._servers) > 1 else self._timeout)
        moved = "" if self.uri == lost else f" to {self.uri}"
        raise VLAConnectionLostError(
            f"connection to policy server {lost} lost mid-request ({cause}); reconnected"
            f"{moved}, the episode in progress is void"
        )

    def reset(self) -> None:
        pass

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
