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

Batched inference. openpi's server runs one request at a time, so N workers sharing a GPU
each wait for everyone else's chunk, while a large model computes a batch of 8 in about
the time of one. Here a policy offering `infer_batch` (vla.base.BatchedPolicy, the shape
openpi's proposed `Policy.infer_batch` has) gets the requests of all connections gathered
into one call: whatever arrived while the last call ran, up to `max_batch`, waiting for
more until `batch_wait_ms` after the oldest arrived, unless every open connection already
has its request in (a connection's next frame is read once its last is answered, so a
lone worker never waits for company that cannot come). Each client still sends one
observation and gets its own reply: the wire protocol is openpi's, unchanged. A policy
without `infer_batch` is called one request at a time. The policy runs on a thread of its
own, so the server keeps receiving (the next batch) and answering /healthz while it
computes. A batch the policy refuses is run again one request at a time, so one bad
observation fails only its own connection. `server_timing` reports each request's queue
wait, batch size and compute time.

For fault-injection tests it can drop the connection, unanswered, on every N-th request
(`drop_every`), as a network would.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection

from sarl_dist.vla.base import BatchedPolicy, VLAPolicy
from sarl_dist.wire import MAX_MESSAGE_BYTES, MsgpackServer, pack, unpack

log = logging.getLogger(__name__)


@dataclass
class _Request:
    obs: dict[str, Any]
    reply: asyncio.Future
    arrived: float  # time.monotonic() when its frame was read


class PolicyServer(MsgpackServer):
    """Serve `policy` on host:port (see the module docstring)."""

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
        max_batch: int = 8,
        batch_wait_ms: float = 5.0,
    ) -> None:
        super().__init__(host, port, api_key, max_message_bytes)
        self.policy = policy
        self.metadata = metadata or {}
        self._drop_every, self._requests = drop_every, 0
        self.max_batch = max_batch if isinstance(policy, BatchedPolicy) else 1
        self.batch_wait = batch_wait_ms / 1e3
        # One thread: the policy is not assumed thread-safe, and calls never overlap.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="policy")
        self._queue: asyncio.Queue[_Request] | None = None
        self._connections = 0  # each has at most one request in flight (read, answer, read)
        self.batch_sizes: Counter[int] = Counter()  # calls of the policy by batch size

    async def serve_async(self) -> None:
        self._queue = asyncio.Queue()
        batcher = asyncio.create_task(self._batcher())
        try:
            await super().serve_async()
        finally:
            batcher.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def handle(self, ws: ServerConnection) -> None:
        self._connections += 1
        try:
            await self._serve_connection(ws)
        finally:
            self._connections -= 1

    async def _serve_connection(self, ws: ServerConnection) -> None:
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
                request = _Request(obs, asyncio.get_running_loop().create_future(), start)
                self._queue.put_nowait(request)
                reply = await request.reply
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

    async def _batcher(self) -> None:
        """Gather queued requests into calls of the policy, one call at a time."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = batch[0].arrived + self.batch_wait
            # No waiting once every connection has its request in the batch.
            while len(batch) < min(self.max_batch, self._connections):
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            await self._serve(loop, batch)

    async def _serve(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        """Answer every request of `batch`: one call of the policy, or, for a lone request, a
        policy without infer_batch or a batch it refused, one call per request."""
        start = time.monotonic()
        if len(batch) > 1:
            try:
                replies = await loop.run_in_executor(
                    self._executor, self.policy.infer_batch, [r.obs for r in batch]
                )
                if len(replies) != len(batch):
                    raise ValueError(f"infer_batch gave {len(replies)} replies to {len(batch)}")
            except Exception as exc:
                log.warning("a batch of %d failed (%s); serving it one by one", len(batch), exc)
            else:
                self._answer(batch, replies, start)
                return
        for request in batch:
            start = time.monotonic()
            try:
                reply = await loop.run_in_executor(self._executor, self.policy.infer, request.obs)
            except Exception as exc:
                if not request.reply.done():
                    request.reply.set_exception(exc)
                continue
            self._answer([request], [reply], start)

    def _answer(self, batch: list[_Request], replies: list, start: float) -> None:
        compute_ms = 1e3 * (time.monotonic() - start)
        self.batch_sizes[len(batch)] += 1
        for request, reply in zip(batch, replies, strict=True):
            if request.reply.done():  # its client has gone
                continue
            if not isinstance(reply, dict):
                error = TypeError(f"the policy answered a {type(reply).__name__}, not a dict")
                request.reply.set_exception(error)
                continue
            timing = {
                "infer_ms": compute_ms,
                "queue_ms": 1e3 * (start - request.arrived),
                "batch_size": len(batch),
            }
            request.reply.set_result({**reply, "server_timing": timing})
