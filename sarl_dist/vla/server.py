"""A policy server speaking openpi's websocket protocol, so the project's own VLAs are
reached through exactly the client code a pi0.5 server needs.

Protocol (openpi's `WebsocketPolicyServer`): after the handshake the server sends one
msgpack frame of metadata; each request is one binary msgpack-numpy frame holding the
observation dict; the reply holds "actions" plus "server_timing"; a failure is answered
with a text frame (the error) and the connection is closed. `GET /healthz` answers 200.
Beyond openpi: an optional API key (openpi's `Authorization: Api-Key ...` header) is
checked at the handshake, frames are size-limited, and it binds 127.0.0.1 by default.
msgpack only: nothing received is ever unpickled. For fault-injection tests it can drop
the connection, unanswered, on every N-th request (`drop_every`), as a network would.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import threading
import time
from typing import Any

import websockets
from openpi_client import msgpack_numpy
from websockets.asyncio.server import Request, Response, ServerConnection, serve

from sarl_dist.vla.base import VLAPolicy

log = logging.getLogger(__name__)
# websockets logs every handshake header at DEBUG, the API key included: never below INFO.
logging.getLogger("websockets").setLevel(logging.INFO)
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class PolicyServer:
    """Serve `policy` on host:port; one request at a time per connection, like openpi."""

    def __init__(
        self,
        policy: VLAPolicy,
        host: str = "127.0.0.1",
        port: int = 8000,
        metadata: dict[str, Any] | None = None,
        api_key: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        drop_every: int = 0,
    ) -> None:
        self.policy, self.host, self.port = policy, host, port
        self.metadata = metadata or {}
        self._api_key = api_key
        self._max_bytes = max_message_bytes
        self._drop_every, self._requests = drop_every, 0
        self._lock = asyncio.Lock()  # the policy is not assumed thread- or task-safe
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self._api_key is not None:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Api-Key {self._api_key}".encode()):
                log.warning("refused a connection with a missing or wrong API key")
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "invalid API key\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        packer = msgpack_numpy.Packer()
        await ws.send(packer.pack(self.metadata))
        prev_total = None
        while True:
            try:
                frame = await ws.recv()
            except websockets.ConnectionClosed:
                return
            start = time.monotonic()
            self._requests += 1
            if self._drop_every and self._requests % self._drop_every == 0:
                log.warning("fault injection: dropping the connection (request %d)", self._requests)
                ws.transport.abort()
                return
            try:
                if isinstance(frame, str):
                    raise TypeError("expected a binary msgpack frame, got text")
                obs = msgpack_numpy.unpackb(frame)
                if not isinstance(obs, dict):
                    raise TypeError(f"expected an observation dict, got {type(obs).__name__}")
                async with self._lock:
                    t0 = time.monotonic()
                    reply = dict(self.policy.infer(obs))
                    infer_s = time.monotonic() - t0
                reply["server_timing"] = {"infer_ms": infer_s * 1e3}
                if prev_total is not None:
                    reply["server_timing"]["prev_total_ms"] = prev_total * 1e3
                await ws.send(packer.pack(reply))
                prev_total = time.monotonic() - start
            except websockets.ConnectionClosed:
                return
            except Exception as exc:
                log.warning("request failed: %s: %s", type(exc).__name__, exc)
                await ws.send(f"{type(exc).__name__}: {exc}")
                await ws.close(code=1011, reason="policy error; message in previous frame")
                return

    async def serve_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._handler,
            self.host,
            self.port,
            compression=None,
            max_size=self._max_bytes,
            process_request=self._process_request,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def serve_forever(self) -> None:
        asyncio.run(self.serve_async())

    def start_background(self, timeout: float = 10.0) -> PolicyServer:
        """Serve on a daemon thread (tests, in-process servers); returns once listening."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="policy-server", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"policy server did not start on {self.host}:{self.port}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving; a background server has released its port when this returns."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
