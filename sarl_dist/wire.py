"""The perimeter every server and client of the project shares: msgpack over websockets.

One base for the policy server (sarl_dist/vla/server.py) and the robot server
(sarl_dist/robot/server.py), so the checks that keep a server safe to expose live in one
place: an optional API key checked at the handshake (openpi's `Authorization: Api-Key
...` header, compared in constant time, never logged), a frame size limit, `GET /healthz`
answering 200, 127.0.0.1 by default, and the websockets logger held at INFO because at
DEBUG it logs every handshake header, the key included.

Frames are openpi's msgpack-numpy format, read by `unpack` here, never by
openpi_client.msgpack_numpy: that decoder builds an array of any dtype from the sender's
bytes, so one frame holding an object array with made-up pointers crashes the reader.
`unpack` builds only plain numeric and bool arrays whose buffer matches shape x itemsize,
bounds dimensions and nesting, and accepts nothing but maps, lists, strings, bytes,
numbers, booleans and None. Nothing received is ever unpickled.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Self

import msgpack
import numpy as np
import websockets
from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

log = logging.getLogger(__name__)
logging.getLogger("websockets").setLevel(logging.INFO)
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 16  # maps and lists inside each other (an observation needs 3)
MAX_DIMS = 8  # array dimensions (an image needs 3)
MAX_DIM = 1 << 24  # elements along one dimension, also of an empty array
_PLAIN_DTYPE = re.compile(r"^[<>|=]?[biuf][1248]$")  # bool, ints, floats: openpi's dtype.str
_LEAVES = (np.ndarray, np.generic, str, bytes, int, float, bool, type(None))


class WireError(ValueError):
    """A frame that is not a well-formed msgpack-numpy message of plain types."""


def _array(spec: dict) -> np.ndarray | np.generic:
    dtype = spec.get(b"dtype")
    if not isinstance(dtype, str) or not _PLAIN_DTYPE.match(dtype):
        raise WireError(f"array dtype {dtype!r} refused: only bool, int, uint and float")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise WireError(f"array dtype {dtype!r} refused: not a NumPy dtype") from None
    data = spec.get(b"data")
    if b"__npgeneric__" in spec:
        if not isinstance(data, int | float):
            raise WireError(f"scalar of dtype {dtype} holds {type(data).__name__}")
        try:
            return dt.type(data)
        except (OverflowError, ValueError):
            raise WireError(f"scalar {data!r} does not fit {dtype}") from None
    shape = spec.get(b"shape")
    if not isinstance(data, bytes) or not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise WireError(f"array needs bytes data and a shape of at most {MAX_DIMS} dimensions")
    if not all(type(n) is int and 0 <= n <= MAX_DIM for n in shape):
        raise WireError(f"array shape {shape} refused: dimensions are integers 0..{MAX_DIM}")
    size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if size != len(data):
        raise WireError(
            f"array of shape {shape} and dtype {dtype} needs {size} bytes, got {len(data)}"
        )
    return np.ndarray(buffer=data, dtype=dt, shape=tuple(shape))


def _object_hook(obj: dict) -> Any:
    if b"__ndarray__" in obj or b"__npgeneric__" in obj:
        return _array(obj)
    return obj


def _refuse_ext(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack extension type {code} refused")


def _check_plain(value: Any) -> None:
    """Only plain containers and scalars, at most MAX_DEPTH deep (iteratively: a deep frame
    must not exhaust the reader's stack)."""
    todo = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, _LEAVES):
            continue
        if depth >= MAX_DEPTH:
            raise WireError(f"nesting deeper than {MAX_DEPTH} levels refused")
        if isinstance(item, dict):
            todo += ((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            todo += ((v, depth + 1) for v in item)
        else:
            raise WireError(f"a value of type {type(item).__name__} refused")


def unpack(frame: bytes) -> Any:
    """A msgpack-numpy frame, decoded to plain Python values and plain NumPy arrays
    (read-only, sharing the frame's buffer); WireError for anything else."""
    try:
        value = msgpack.unpackb(
            frame,
            object_hook=_object_hook,
            ext_hook=_refuse_ext,
            strict_map_key=True,
        )
    except WireError:
        raise
    except Exception as exc:  # truncated, trailing data, too deep for msgpack, bad UTF-8
        raise WireError(f"undecodable msgpack frame ({type(exc).__name__}: {exc})") from None
    _check_plain(value)
    return value


def _pack_array(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"cannot send an array of dtype {obj.dtype}: only bool and numbers")
        if isinstance(obj, np.generic):
            return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": list(obj.shape),
        }
    raise TypeError(f"cannot send a value of type {type(obj).__name__}")


def pack(value: Any) -> bytes:
    """openpi's msgpack-numpy frame (what openpi-client and openpi's server read)."""
    return msgpack.packb(value, default=_pack_array)


def api_key_from_env(name: str | None, setting: str) -> str | None:
    """The key held in environment variable `name` (None: no key); keys never sit in configs."""
    if name is None:
        return None
    key = os.environ.get(name)
    if not key:
        raise ValueError(f"{setting}: environment variable {name} is not set")
    return key


class KeyRefusedError(ConnectionError):
    """The server answered 401 or 403 to the handshake: retrying will not help."""


class UnreachableError(ConnectionError):
    """No connection within the deadline."""


def connect(
    uri: str, api_key: str | None, timeout: float, what: str
) -> tuple[ClientConnection, dict[str, Any]]:
    """A websocket to `uri` and the server's metadata (its first frame), retried with
    backoff until `timeout` seconds have passed (a server still starting, or dying as we
    connect, is not there yet; 0: one attempt). A refused key fails at once."""
    headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
    deadline, delay = time.monotonic() + timeout, 0.1
    while True:
        try:
            ws = ws_connect(
                uri,
                additional_headers=headers,
                compression=None,
                max_size=MAX_MESSAGE_BYTES,
                open_timeout=max(deadline - time.monotonic(), 1.0),
            )
            try:
                frame = ws.recv(timeout=max(deadline - time.monotonic(), 1.0))
            except BaseException:
                ws.close()
                raise
            metadata = unpack(frame) if isinstance(frame, bytes) else frame
            if not isinstance(metadata, dict):
                ws.close()
                raise WireError(f"{what} {uri} sent {str(metadata)[:200]!r} as its metadata")
            return ws, metadata
        except websockets.InvalidURI as exc:
            raise ValueError(f"{what} address {uri!r}: {exc}") from None
        except websockets.InvalidStatus as exc:
            code = exc.response.status_code
            if code in (401, 403):
                raise KeyRefusedError(f"{what} {uri} refused the API key ({code})") from None
            error: Exception = exc
        except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
            error = exc
        except websockets.ConnectionClosed as exc:  # a server dying as we connect
            error = exc
        left = deadline - time.monotonic()
        if left <= 0:
            raise UnreachableError(
                f"no {what} at {uri} after {timeout:g}s ({type(error).__name__}: {error})"
            ) from None
        log.info("waiting for %s %s (%s)", what, uri, error)
        time.sleep(min(delay, left))
        delay = min(2 * delay, 2.0)


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
