"""`ray job submit` against a real `ray start --head` cluster, as README's cluster section runs it.

The cluster is separate from the session's `ray_cluster` fixture: its own processes (its own
session, so no signal reaches pytest), temp dir, ports and token file. `ray stop` would stop
every Ray on the machine (it finds processes by name, not by cluster), including other
people's, so the cluster is stopped through its own `ray start --block` process, and anything
left (the job's driver runs in a session of its own) is found by a marker in its environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sarl_dist.testing import free_ports

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
MARKER = "SARL_TEST_CLUSTER"
START_DEADLINE_S = 90.0
JOB_DEADLINE_S = 240.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Every port the head opens, so nothing collides with another Ray on this machine.
PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--ray-client-server-port",
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
)


def _marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries this cluster's marker (ours and nobody else's)."""
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in env:
            pids.append(int(entry.name))
    return pids


def _ray(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RAY, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def head_node():
    """A `ray start --head` on this machine with token auth; stopped even when the test fails."""
    # mkdtemp under /tmp: Ray's socket paths under a pytest tmp_path can pass the 107-byte limit.
    temp = Path(tempfile.mkdtemp(prefix="sarl-ray-", dir="/tmp"))
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    marker = temp.name
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        {
            # What README asks of the shell that starts the head and of the submitting shell.
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),  # not ~/.ray/auth_token, which others share
            "RAY_USAGE_STATS_ENABLED": "0",
            # The job's entrypoint runs with the head's PATH: `sarl` must be the venv's.
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(BIN.parent),
            MARKER: marker,
        }
    )
    env["RAY_ADDRESS"] = f"http://127.0.0.1:{ports['--dashboard-port']}"
    proc = None
    try:
        with (temp / "start.log").open("w") as log:
            proc = subprocess.Popen(
                [
                    RAY,
                    *shlex.split(
                        f"start --head --block --disable-usage-stats --node-ip-address 127.0.0.1 "
                        f"--dashboard-host 127.0.0.1 --temp-dir {temp / 'ray'} "
                        "--num-cpus 2 --num-gpus 1"
                    ),
                    *(arg for flag, port in ports.items() for arg in (flag, str(port))),
                ],
                env={k: v for k, v in env.items() if k != "RAY_ADDRESS"},
                cwd=temp,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: signals to it spare pytest
            )
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited {proc.returncode}:\n{_tail(temp / 'start.log')}")
            if _ray(["job", "list"], env, timeout=30).returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the job server did not answer:\n{_tail(temp / 'start.log')}")
            time.sleep(1.0)
        yield {"env": env, "temp": temp}
    finally:
        _stop(proc, marker)
        shutil.rmtree(temp, ignore_errors=True)


def _stop(proc: subprocess.Popen | None, marker: str) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()  # `ray start --block` stops its raylet, GCS and dashboard on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for pid in _marked_pids(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _job_status(job_id: str, env: dict[str, str]) -> str:
    """The job's status from the state API (`ray job status` words each state differently)."""
    proc = _ray(["list", "jobs", "--format", "json", "--filter", f"submission_id={job_id}"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (job,) = json.loads(proc.stdout)
    return job["status"]


def test_ray_job_submit_runs_sarl_on_a_head_node(head_node, tmp_path):
    env = head_node["env"]
    out = tmp_path / "sc-job"  # absolute: a relative --out lands in the job's temporary copy
    job_id = f"sarl-test-{secrets.token_hex(4)}"
    overrides = [
        "train.episodes=4",
        "eval.every=4",
        "eval.episodes=1",
        "runtime.num_workers=1",
        "runtime.worker_gpus=0.5",  # the head declares one GPU: this must reach the scheduler
        "q.ensemble=2",
        "learner.warmup=4",
        "learner.batch_size=8",
    ]
    submit = _ray(
        [
            *shlex.split(
                f"job submit --no-wait --submission-id {job_id} --working-dir . -- "
                f"sarl train configs/skill_chain.yaml --address auto --out {out} --no-progress"
            ),
            *(arg for o in overrides for arg in ("--set", o)),
        ],
        env,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr

    deadline = time.monotonic() + JOB_DEADLINE_S
    status = _job_status(job_id, env)
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(2.0)
        status = _job_status(job_id, env)
    logs = _ray(["job", "logs", job_id], env).stdout
    assert status == "SUCCEEDED", f"job {job_id} is {status}:\n{logs[-4000:]}"

    # The driver names its run directory in the job's log; it is the one we asked for.
    assert f"run directory: {out}" in logs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 4
    episodes = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert sorted(e["episode"] for e in episodes) == [0, 1, 2, 3]
    assert {e["worker"] for e in episodes} == {0}
    assert (out / "evals.jsonl").exists()

    # The run's placement group (kept by the GCS after removal) carried the worker's GPU share.
    pgs = _ray(["list", "placement-groups", "--detail", "--format", "json"], env)
    assert pgs.returncode == 0, pgs.stdout + pgs.stderr
    (pg,) = [p for p in json.loads(pgs.stdout) if p["name"] == f"sarl-{out.name}"]
    bundles = [b["unit_resources"] for b in pg["bundles"]]
    assert {"CPU": 0.5, "GPU": 0.5} in bundles

    # Token authentication is on: a wrong token is refused.
    wrong = {**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    refused = _ray(["job", "status", job_id], wrong)
    assert refused.returncode != 0
    assert "auth" in (refused.stdout + refused.stderr).lower()
