"""A policy server speaking openpi's websocket protocol, so the project's own VLAs are
reached through exactly the client code a pi0.5 server needs.

Protocol (openpi's `WebsocketPolicyServer`): after the handshake the server sends one
msgpack frame of metadata; each request is one binary msgpack-numpy frame holding the
observation dict; the reply holds "actions" plus "server_timing"; a failure is answered
with a text frame (the error) and the connection is closed. `GET /healthz` answers 200.
Beyond openpi (the perimeter in sarl_dist/wire.py): an optional API key (openpi's
`Authorization: Api-Key ...` header) is checked at the handshake, frames are size-limited,
it binds 127.0.0.1 by default, and frames are decoded by `wire.unpack`, which builds only
plain numeric arrays (openpi's decoder builds any dtype a client sends: one object-dtype
frame crashes it). Nothing received is ever unpickled.
For fault-injection tests it can drop the connection, unanswered, on every N-th request
(`drop_every`), as a network would.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection

from sarl_dist.vla.base import VLAPolicy
from sarl_dist.wire import MAX_MESSAGE_BYTES, MsgpackServer, pack, unpack

log = logging.getLogger(__name__)


class PolicyServer(MsgpackServer):
    """Serve `policy` on host:port; one request at a time per connection, like openpi."""

    kind = "policy server"

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
        super().__init__(host, port, api_key, max_message_bytes)
        self.policy = policy
        self.metadata = metadata or {}
        self._drop_every, self._requests = drop_every, 0
        self._lock = asyncio.Lock()  # the policy is not assumed thread- or task-safe

    async def handle(self, ws: ServerConnection) -> None:
        await ws.send(pack(self.metadata))
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
                obs = unpack(frame)
                if not isinstance(obs, dict):
                    raise TypeError(f"expected an observation dict, got {type(obs).__name__}")
                async with self._lock:
                    t0 = time.monotonic()
                    reply = dict(self.policy.infer(obs))
                    infer_s = time.monotonic() - t0
                reply["server_timing"] = {"infer_ms": infer_s * 1e3}
                if prev_total is not None:
                    reply["server_timing"]["prev_total_ms"] = prev_total * 1e3
                await ws.send(pack(reply))
                prev_total = time.monotonic() - start
            except websockets.ConnectionClosed:
                return
            except Exception as exc:
                log.warning("request failed: %s: %s", type(exc).__name__, exc)
                await ws.send(f"{type(exc).__name__}: {exc}")
                await ws.close(code=1011, reason="policy error; message in previous frame")
                return
