"""The VLAServer actor: one of a run's policy servers (vla.kind=skill), speaking openpi's
protocol so workers reach it through the same client code as a pi0.5 server.

It serves `vla.served_policy` in its own process or, given `vla.server_command`, runs the
server as its subprocess (`sarl serve-vla`, openpi's `serve_policy.py`) on a free port and
is ready once GET /healthz answers 200. The subprocess dies with the actor
(PR_SET_PDEATHSIG): a replica Ray kills or loses takes its server with it, never leaving
a GPU held by an orphan. `sarl probe` uses the same class in process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import ray

from sarl_dist.config import Config, dump_config
from sarl_dist.vla import api_key, make_server_policy
from sarl_dist.vla.server import PolicyServer

# Runs the command with the parent-death signal set, so it survives exec (and no
# preexec_fn runs in a process that has threads); exits if the parent is already gone.
_TIED = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "  # PR_SET_PDEATHSIG
    "os.getppid() == int(sys.argv[1]) or sys.exit(1); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


class VLAServerError(RuntimeError):
    pass


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class VLAServer:
    def __init__(self, cfg: Config) -> None:
        vla = cfg.vla
        self.bind = vla.server_bind
        self.server: PolicyServer | None = None
        self.process: subprocess.Popen | None = None
        if not vla.server_command:
            policy, metadata = make_server_policy(vla.served_policy, cfg)
            self.server = PolicyServer(
                policy,
                self.bind,
                0,
                metadata,
                api_key=api_key(cfg),
                drop_every=cfg.faults.drop_vla_every,
                max_batch=vla.max_batch,
                batch_wait_ms=vla.batch_wait_ms,
            ).start_background()
            self.port = self.server.port
            return
        self.port = free_port(self.bind)
        self._dir = tempfile.TemporaryDirectory(prefix="sarl-vla-")
        config = Path(self._dir.name) / "config.yaml"
        config.write_text(dump_config(cfg))
        fill = {"{host}": self.bind, "{port}": str(self.port)}
        fill |= {"{policy}": vla.served_policy, "{config}": str(config)}
        command = [_fill(part, fill) for part in vla.server_command]
        self._log = Path(self._dir.name) / "server.log"
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _TIED, str(os.getpid()), *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_healthy(vla.server_start_timeout, " ".join(command))

    def _wait_healthy(self, timeout: float, command: str) -> None:
        url = f"http://{self._local_host()}:{self.port}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise VLAServerError(
                    f"policy server `{command}` exited with {self.process.returncode}: "
                    f"{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        self.stop()
        raise VLAServerError(
            f"policy server `{command}` did not answer {url} within {timeout:.0f}s "
            f"(vla.server_start_timeout): {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        return self._log.read_text(errors="replace")[-2000:].strip() or "(no output)"

    def _local_host(self) -> str:
        return "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind

    def address(self) -> tuple[str, int]:
        """Where workers reach it: the bound host, or the node's IP when bound to all."""
        if self.bind in ("0.0.0.0", ""):
            return ray.util.get_node_ip_address(), self.port
        return self.bind, self.port

    def pid(self) -> int:
        """The serving process (the subprocess, or this actor)."""
        return self.process.pid if self.process is not None else os.getpid()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _fill(part: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        part = part.replace(key, value)
    return part
