"""Shared helpers for tests and benchmarks: small configs, hand-made transitions and a
local VLM server that speaks Gemini's and OpenAI's HTTP APIs.

Nothing here is used by the product path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sarl_dist.config import Config, EnvConfig, apply_overrides, build_config
from sarl_dist.core.replay import Batch

FAST: dict[str, Any] = {
    "q": {"ensemble": 2, "hidden": 32, "image_features": 16},
    "learner": {"batch_size": 16, "warmup": 8, "updates_per_step": 1.0, "publish_every": 5},
    "runtime": {"num_workers": 2, "worker_cpus": 0.5, "learner_cpus": 0.5, "vlm_cpus": 0.25},
    "train": {"episodes": 8, "checkpoint_every": 4},
    "eval": {"every": 4, "episodes": 4},
}


def tiny_config(*overrides: str, base: dict[str, Any] | None = None) -> Config:
    """A config that runs the full loop in seconds; overrides as `a.b=value`."""
    return build_config(apply_overrides(base if base is not None else FAST, list(overrides)))


def image_of(value: int) -> np.ndarray:
    """A flat 64x64 image: distinct values make distinct, learnable states."""
    return np.full((64, 64, 3), value, dtype=np.uint8)


def make_batch(
    states: list[int],
    prompts: list[int],
    rewards: list[float],
    dones: list[float],
    next_states: list[int],
    next_candidates: list[list[int]],
    num_prompts: int,
) -> Batch:
    """Transitions between flat-image states, with explicit next candidate sets."""
    n = len(states)
    mask = np.zeros((n, num_prompts), dtype=bool)
    for i, cands in enumerate(next_candidates):
        mask[i, cands] = True
    return Batch(
        image=np.stack([image_of(s) for s in states]),
        proprio=np.zeros((n, 8), np.float32),
        prompt=np.asarray(prompts, np.int64),
        reward=np.asarray(rewards, np.float32),
        done=np.asarray(dones, np.float32),
        next_image=np.stack([image_of(s) for s in next_states]),
        next_proprio=np.zeros((n, 8), np.float32),
        next_mask=mask,
    )


@dataclass(frozen=True)
class FakeReply:
    """One scripted answer of FakeVLMServer (a real HTTP answer, not a mocked client)."""

    status: int = 200
    text: str | None = None  # the model's text; None sends a candidate with no content
    finish_reason: str = "STOP"
    delay: float = 0.0  # seconds to wait before answering (latency, or a timeout)
    tokens: tuple[int, int] = (300, 40)  # usage metadata: prompt and output tokens

    @classmethod
    def json(cls, answer: Any, delay: float = 0.0) -> FakeReply:
        return cls(text=json.dumps(answer), delay=delay)

    @classmethod
    def error(cls, status: int) -> FakeReply:
        return cls(status=status)


@dataclass
class FakeCall:
    """What one request carried, decoded as the server saw it."""

    route: str  # "gemini" or "openai"
    version: str  # API version in the path (v1, v1beta, ...)
    model: str
    api_key: str | None
    system: str
    text: str  # every text part of the user turn, joined
    images: list[np.ndarray]
    config: dict[str, Any]  # Gemini's generationConfig, or OpenAI's top-level options


_GEMINI_ROUTE = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^/:]+):generateContent$")
_OPENAI_ROUTE = re.compile(r"^/(?P<version>[^/]+)/chat/completions$")


def _decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class _Listener(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops concurrent connects (1 s SYN retry)


class FakeVLMServer:
    """A local VLM endpoint on 127.0.0.1 for tests and benchmarks.

    It answers Gemini's generateContent route under any API version (v1, v1beta) and
    OpenAI's chat completions route, decodes the images as the real services do (URL-safe
    base64 inline data; base64 data URLs) and replies from a script: `script(i, call)`
    gives the reply to the i-th request. The real SDKs talk to it over HTTP, so retries,
    timeouts and parsing are exercised exactly as against the real service.
    """

    def __init__(self, script: Callable[[int, FakeCall], FakeReply]) -> None:
        self.script = script
        self.calls: list[FakeCall] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _Listener(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> FakeVLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _record(self, path: str, body: dict, headers) -> FakeCall | None:
        if m := _GEMINI_ROUTE.match(path):
            user = body["contents"][-1]["parts"]
            return FakeCall(
                route="gemini",
                version=m["version"],
                model=m["model"],
                api_key=headers.get("x-goog-api-key"),
                system=" ".join(p["text"] for p in body["systemInstruction"]["parts"]),
                text=" ".join(p["text"] for p in user if "text" in p),
                images=[
                    _decode_png(base64.urlsafe_b64decode(p["inlineData"]["data"]))
                    for p in user
                    if "inlineData" in p
                ],
                config=body.get("generationConfig", {}),
            )
        if m := _OPENAI_ROUTE.match(path):
            system, user = body["messages"][0], body["messages"][-1]["content"]
            urls = [p["image_url"]["url"] for p in user if p["type"] == "image_url"]
            return FakeCall(
                route="openai",
                version=m["version"],
                model=body["model"],
                api_key=headers.get("authorization", "").removeprefix("Bearer ") or None,
                system=system["content"],
                text=" ".join(p["text"] for p in user if p["type"] == "text"),
                images=[_decode_png(base64.b64decode(u.partition(",")[2])) for u in urls],
                config={k: v for k, v in body.items() if k not in ("messages", "model")},
            )
        return None

    def _reply(self, call: FakeCall, reply: FakeReply) -> dict:
        if reply.status != 200:
            return {"error": {"code": reply.status, "message": "scripted error", "status": "ERR"}}
        if call.route == "gemini":
            candidate: dict[str, Any] = {"index": 0, "finishReason": reply.finish_reason}
            if reply.text is not None:
                candidate["content"] = {"role": "model", "parts": [{"text": reply.text}]}
            return {
                "candidates": [candidate],
                "usageMetadata": {
                    "promptTokenCount": reply.tokens[0],
                    "candidatesTokenCount": reply.tokens[1],
                    "totalTokenCount": sum(reply.tokens),
                },
                "modelVersion": call.model,
            }
        finish = {"STOP": "stop", "SAFETY": "content_filter"}.get(reply.finish_reason, "stop")
        return {
            "id": "fake",
            "object": "chat.completion",
            "created": 0,
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": reply.tokens[0],
                "completion_tokens": reply.tokens[1],
                "total_tokens": sum(reply.tokens),
            },
        }

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                """Quiet: tests read server.calls instead."""

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                call = server._record(self.path.partition("?")[0], body, self.headers)
                if call is None:
                    self._send(404, {"error": {"code": 404, "message": f"no route {self.path}"}})
                    return
                with server._lock:
                    index = len(server.calls)
                    server.calls.append(call)
                reply = server.script(index, call)
                if server._stop.wait(reply.delay):
                    return
                self._send(reply.status, server._reply(call, reply))

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                with contextlib.suppress(OSError):  # the client may have timed out and gone
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status != 200:  # as OpenAI's servers do; google-genai ignores it
                        self.send_header("retry-after-ms", "10")
                    self.end_headers()
                    self.wfile.write(data)

        return Handler


def scripted(*replies: FakeReply) -> Callable[[int, FakeCall], FakeReply]:
    """Replies in order; the last one repeats forever."""
    return lambda i, _call: replies[min(i, len(replies) - 1)]


class FakeGymArm:
    """A gym-style arm (the shape of Bridge's widowx_envs) for the robot server's GymRobot:
    the state's first three values are the end effector, moved 1 cm per unit action."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.action_space = SimpleNamespace(shape=(7,))
        self.observation_space = {"state": SimpleNamespace(shape=(7,))}
        self.pos = np.zeros(3)
        self.stops = 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "image": np.full((32, 32, 3), 100, np.uint8),
            "wrist_image": np.full((32, 32, 3), 200, np.uint8),
            "state": np.concatenate([self.pos, np.zeros(4)]).astype(np.float32),
        }

    def reset(self) -> tuple[dict[str, np.ndarray], dict]:
        self.pos[:] = 0.0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        self.pos += 0.01 * np.asarray(action[:3])
        return self._obs(), 0.0, False, False, {}

    def home(self) -> dict[str, np.ndarray]:
        self.pos[:] = 0.0
        return self._obs()

    def stop(self) -> None:
        self.stops += 1


def fake_gym_arm(env_cfg: EnvConfig) -> FakeGymArm:
    """The `module:factory` the robot server's tests name: sarl_dist.testing:fake_gym_arm."""
    return FakeGymArm()


def write_demos(
    directory: Path,
    prompts: list[str],
    count: int = 2,
    image_hw: tuple[int, int] = (64, 64),
    state_dim: int = 8,
    failed: tuple[int, ...] = (),
) -> Path:
    """`count` random demonstrations following `prompts` (those in `failed` unsuccessful)."""
    from sarl_dist.core.demos import save_demo

    rng = np.random.default_rng(0)
    steps = len(prompts) + 1
    for k in range(count):
        save_demo(
            Path(directory) / f"demo{k}.npz",
            rng.integers(0, 255, (steps, *image_hw, 3), dtype=np.uint8),
            rng.normal(size=(steps, state_dim)),
            prompts,
            success=k not in failed,
        )
    return Path(directory)


def run_sarl(*args: str, timeout: float = 120.0, env: dict | None = None):
    """`sarl ARGS...` as a user runs it (a fresh process, from the repository root, so
    relative config paths work), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "sarl_dist.cli.main", *args],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def free_ports(n: int) -> list[int]:
    """n TCP ports free on 127.0.0.1 right now (for a server started as a separate process)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_healthy(port: int, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Wait until a server on 127.0.0.1:port answers GET /healthz (or its process exits)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no server on 127.0.0.1:{port} after {timeout:g}s")
        time.sleep(0.1)


class Person:
    """A person at a terminal, for tests: waits for a prompt to appear in what a program
    has written, then types an answer, as someone reading the screen would (the robot
    mode drops anything typed before its prompt appears). `read` returns the program's
    output so far; `type` sends one line to its input."""

    def __init__(self, read: Callable[[], str], type_line: Callable[[str], None]) -> None:
        self._read, self._type = read, type_line
        self._seen = 0  # output before this offset has been waited for already

    @classmethod
    def of_process(cls, proc: subprocess.Popen, log: Path) -> Person:
        """A `sarl` process started with stdin=PIPE (text) and its output in `log`."""

        def type_line(line: str) -> None:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

        return cls(lambda: log.read_text(errors="replace"), type_line)

    def wait_for(self, *texts: str, timeout: float = 300.0) -> str:
        """Block until one of `texts` appears after the last prompt waited for; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            out = self._read()
            found = [(at, t) for t in texts if (at := out.find(t, self._seen)) >= 0]
            if found:
                at, text = min(found)
                self._seen = at + len(text)
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {texts} after {timeout:g}s; output ends:\n{out[-2000:]}")
            time.sleep(0.05)

    def answer(self, prompt: str, line: str, timeout: float = 300.0) -> None:
        self.wait_for(prompt, timeout=timeout)
        self.type(line)

    def type(self, line: str) -> None:
        self._type(line)


@contextlib.contextmanager
def websocket_server(handler, **options) -> Iterator[int]:
    """A bare websockets server on 127.0.0.1 running `handler` in a thread of its own (a
    peer written apart from the project's servers: openpi-style, hostile); yields its port
    and stops it on exit. `options` go to websockets' `serve`."""
    from websockets.asyncio.server import serve

    started, state = threading.Event(), {}

    async def main():
        async with serve(handler, "127.0.0.1", 0, **options) as server:
            state["port"] = server.sockets[0].getsockname()[1]
            state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
            started.set()
            await state["stop"].wait()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    assert started.wait(5), "the websocket server did not start"
    try:
        yield state["port"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
