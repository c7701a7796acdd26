"""The driver itself killed (SIGKILL) mid-run, then `sarl train --resume`, both as real
subprocesses on remote backends (a Gemini-compatible VLM and an openpi policy server) whose
keys are planted in the environment. One run, two checks: the resumed run ends with the
configured episodes, each once; and neither key appears in any file the runs wrote, in
their output, or in Ray's session logs."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sarl_dist.core.prompt_cache import PromptCache
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.testing import FakeReply, FakeVLMServer, scripted, tiny_config
from sarl_dist.vla import make_server_policy
from sarl_dist.vla.server import PolicyServer

ROOT = Path(__file__).resolve().parents[1]
GEMINI_KEY = "planted-gemini-key-6f1d2c"
VLA_KEY = "planted-vla-key-93ab7e"
EPISODES = 16
PROMPTS = {"prompts": ["open the drawer", "pick up the red block", "turn on the lamp"]}


def _kill_session(sid: int) -> None:
    """SIGKILL, one by one, what is left of a process session this test started (Ray's
    helpers outlive a killed driver)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


def _sarl(*args: str, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sarl_dist.cli.main", "train", *args, "--no-progress"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    out, ray_tmp = root / "run", Path(tempfile.mkdtemp(prefix="sarl-ray-", dir="/tmp"))
    env = {
        **os.environ,
        "GEMINI_API_KEY": GEMINI_KEY,
        "SARL_TEST_VLA_KEY": VLA_KEY,
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("GOOGLE_API_KEY", None)
    policy, metadata = make_server_policy("skill_chain", tiny_config())
    vla = PolicyServer(policy, port=0, metadata=metadata, api_key=VLA_KEY).start_background()
    try:
        with FakeVLMServer(scripted(FakeReply.json(PROMPTS))) as vlm:
            overrides = [
                f"train.episodes={EPISODES}",
                "train.checkpoint_every=4",
                "eval.every=8",
                "eval.episodes=2",
                "q.ensemble=2",
                "learner.warmup=8",
                "learner.batch_size=8",
                "env.skill_chain.step_seconds=0.01",
                "vlm.backend=gemini",
                f"vlm.gemini.base_url={vlm.url}",
                "vlm.retry_delay=0.01",
                "vla.kind=websocket",
                f"vla.port={vla.port}",
                "vla.api_key_env=SARL_TEST_VLA_KEY",
            ]
            sets = [a for o in overrides for a in ("--set", o)]
            first = _sarl(
                str(ROOT / "configs/skill_chain.yaml"),
                "--out",
                str(out),
                *sets,
                env=env,
                log=root / "first.log",
            )
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not (out / "config.yaml").exists():
                time.sleep(0.05)
            intruder = subprocess.Popen(  # a second driver on the running run's directory
                [sys.executable, "-m", "sarl_dist.cli.main", "train", "--resume", str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            episodes = out / "episodes.jsonl"
            while time.monotonic() < deadline and first.poll() is None:
                sealed = (out / "checkpoints/ep-0000004/manifest.json").exists()
                if sealed and episodes.exists() and len(episodes.read_text().splitlines()) >= 6:
                    break
                time.sleep(0.05)
            _, refusal = intruder.communicate(timeout=120)
            assert first.poll() is None, (root / "first.log").read_text()[-3000:]
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            killed = SimpleNamespace(
                lines=len(episodes.read_text().splitlines()),
                finished=(out / "summary.json").exists(),
            )
            _kill_session(first.pid)
            second = _sarl("--resume", str(out), env=env, log=root / "resumed.log")
            code = second.wait(timeout=300)
            _kill_session(second.pid)
            calls = list(vlm.calls)
    finally:
        vla.stop()
    yield SimpleNamespace(
        out=out,
        root=root,
        ray_tmp=ray_tmp,
        killed=killed,
        code=code,
        calls=calls,
        intruder=SimpleNamespace(returncode=intruder.returncode, stderr=refusal),
        first_pid=first.pid,
    )
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_killed_driver_resumes_to_the_configured_episodes_each_once(killed_and_resumed):
    r = killed_and_resumed
    assert not r.killed.finished and r.killed.lines < EPISODES  # it died mid-run
    assert r.code == 0, (r.root / "resumed.log").read_text()[-3000:]
    run = RunDir.open(r.out)
    episodes = run.read_jsonl("episodes.jsonl")
    assert sorted(e["episode"] for e in episodes) == list(range(EPISODES))
    summary = json.loads((r.out / "summary.json").read_text())
    assert summary["episodes"] == EPISODES
    assert summary["replay_size"] == sum(e["decisions"] for e in episodes)
    assert [e["episodes_seen"] for e in run.read_jsonl("evals.jsonl")] == [0, 8, 16]
    cache = PromptCache.load(run.prompt_cache)
    assert all(cache.text(p) == t for e in episodes for p, t in e["prompts"])


def test_a_second_driver_is_refused_while_the_run_goes_on(killed_and_resumed):
    r = killed_and_resumed
    assert r.intruder.returncode == 2, r.intruder.stderr[-2000:]
    assert f"is in use by another driver (pid {r.first_pid} on host" in r.intruder.stderr
    assert "Traceback" not in r.intruder.stderr
    # The killed holder's lock went with its process: the resume above was accepted, and
    # the run still holds each episode once (the test before).
    assert r.code == 0


def test_planted_keys_appear_in_no_written_file_output_or_log(killed_and_resumed):
    r = killed_and_resumed
    assert r.code == 0
    assert r.calls and all(c.api_key == GEMINI_KEY for c in r.calls)  # the key was used
    searched = 0
    for base in (r.root, r.ray_tmp):  # run directory, both outputs, Ray's session logs
        for path in base.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                searched += 1
                for key in (GEMINI_KEY, VLA_KEY):
                    assert key.encode() not in data, f"{key} found in {path}"
    assert searched > 20
