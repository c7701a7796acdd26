"""The VLA client: openpi-client's WebsocketClientPolicy with what a long run needs.

openpi-client 0.1.2 makes one connection attempt and surfaces a server error as a bare
RuntimeError. Here: connection retries with backoff until a deadline (a server that is
still loading a checkpoint is normal), an optional API key, a check of the server's
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
import time
from collections.abc import Sequence
from typing import Any

import websockets
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from sarl_dist.vla.base import VLAError

log = logging.getLogger(__name__)
# websockets logs every handshake header at DEBUG, the API key included: never below INFO.
logging.getLogger("websockets").setLevel(logging.INFO)
REQUEST_REFUSED = (1009, 1011)  # close codes: frame too big, policy error (not a lost link)


class VLAConnectionLostError(VLAError):
    """The connection dropped mid-request and has been re-opened; the episode is void."""


class _UnreachableError(VLAError):
    """No connection within the deadline (a refused key or a wrong server is not this)."""


def _uri(host: str, port: int) -> str:
    return host if host.startswith("ws") else f"ws://{host}:{port}"


class WebsocketVLA:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        connect_timeout: float = 30.0,
        expect_metadata: dict[str, Any] | None = None,
        others: Sequence[tuple[str, int]] = (),
        failover_after: float = 10.0,
    ) -> None:
        self._servers = [(host, port), *others]  # the one in use first
        self._api_key, self._timeout = api_key, connect_timeout
        self._failover_after = failover_after
        self._expect = expect_metadata or {}
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
                policy = self._connect(address, timeout if i == 0 else 0.0)
            except _UnreachableError as exc:
                errors.append(str(exc))
                continue
            self._servers = self._servers[i:] + self._servers[:i]
            if i:
                log.warning("moved from unreachable policy servers to %s", self.uri)
            self._policy = policy
            break
        else:
            raise VLAError("; ".join(errors))
        self.metadata = self._policy.get_server_metadata()
        for key, want in self._expect.items():
            got = self.metadata.get(key)
            if got != want:
                self.close()
                raise VLAError(f"policy server {self.uri} reports {key}={got!r}, expected {want!r}")

    def _connect(self, address: tuple[str, int], timeout: float) -> WebsocketClientPolicy:
        (host, port), uri = address, _uri(*address)
        deadline, delay = time.monotonic() + timeout, 0.1
        while True:
            try:
                return WebsocketClientPolicy(host, port, api_key=self._api_key)
            except websockets.InvalidStatus as exc:
                code = exc.response.status_code
                if code in (401, 403):
                    raise VLAError(f"policy server {uri} refused the API key ({code})") from None
                error: Exception = exc
            except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
                error = exc
            except websockets.ConnectionClosed as exc:  # a server dying as we connect
                error = exc
            if time.monotonic() + delay > deadline:
                raise _UnreachableError(
                    f"no policy server at {uri} after {timeout:.0f}s "
                    f"({type(error).__name__}: {error})"
                ) from None
            log.info("waiting for policy server %s (%s)", uri, error)
            time.sleep(delay)
            delay = min(2 * delay, 2.0)

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._policy.infer(obs)
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code in REQUEST_REFUSED:
                raise VLAError(f"policy server {self.uri} refused the request: {exc}") from None
            self._reconnect(exc)
        except OSError as exc:
            self._reconnect(exc)
        except RuntimeError as exc:  # openpi-client's way of reporting a text (error) frame
            raise VLAError(f"policy server {self.uri} failed: {exc}") from None

    def _reconnect(self, cause: Exception) -> None:
        lost = self.uri
        log.warning("lost the policy server %s (%s); reconnecting", lost, cause)
        self._open(self._failover_after if len(self._servers) > 1 else self._timeout)
        moved = "" if self.uri == lost else f" to {self.uri}"
        raise VLAConnectionLostError(
            f"connection to policy server {lost} lost mid-request ({cause}); reconnected"
            f"{moved}, the episode in progress is void"
        )

    def reset(self) -> None:
        self._policy.reset()

    def close(self) -> None:
        self._policy._ws.close()  # openpi-client exposes no close()
