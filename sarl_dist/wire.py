"""The perimeter every server of the project shares: msgpack over websockets.

One base for the policy server (sarl_dist/vla/server.py) and the robot server
(sarl_dist/robot/server.py), so the checks that keep a server safe to expose live in one
place: an optional API key checked at the handshake (openpi's `Authorization: Api-Key
...` header, compared in constant time, never logged), a frame size limit, `GET /healthz`
answering 200, 127.0.0.1 by default, and the websockets logger held at INFO because at
DEBUG it logs every handshake header, the key included. Subclasses speak msgpack
(openpi_client.msgpack_numpy) in `handle`; nothing received is ever unpickled.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import os
import threading
from abc import ABC, abstractmethod
from typing import Self

from websockets.asyncio.server import Request, Response, ServerConnection, serve

log = logging.getLogger(__name__)
logging.getLogger("websockets").setLevel(logging.INFO)
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def api_key_from_env(name: str | None, setting: str) -> str | None:
    """The key held in environment variable `name` (None: no key); keys never sit in configs."""
    if name is None:
        return None
    key = os.environ.get(name)
    if not key:
        raise ValueError(f"{setting}: environment variable {name} is not set")
    return key


class MsgpackServer(ABC):
    """Serve `handle` on host:port, in the foreground or on a daemon thread."""

    kind = "server"  # names the server in thread names and errors

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.host, self.port = host, port
        self._api_key = api_key
        self._max_bytes = max_message_bytes
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None

    @abstractmethod
    async def handle(self, ws: ServerConnection) -> None:
        """Serve one accepted, authenticated connection until it closes."""

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self._api_key is not None:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Api-Key {self._api_key}".encode()):
                log.warning("%s refused a connection with a missing or wrong API key", self.kind)
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "invalid API key\n")
        return None

    async def serve_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self.handle,
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

    def start_background(self, timeout: float = 10.0) -> Self:
        """Serve on a daemon thread (tests, in-process servers); returns once listening."""
        self._thread = threading.Thread(
            target=self._serve_thread, name=self.kind.replace(" ", "-"), daemon=True
        )
        self._thread.start()
        where = f"{self.kind} on {self.host}:{self.port}"
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{where} did not start within {timeout:.0f}s")
        if self._failed is not None:
            raise RuntimeError(f"{where} did not start: {self._failed}") from self._failed
        return self

    def _serve_thread(self) -> None:
        try:
            self.serve_forever()
        except Exception as exc:  # a port in use: reported by start_background at once
            self._failed = exc
        finally:
            self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving; a background server has released its port when this returns."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
