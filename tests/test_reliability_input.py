"""Bad input stops with a message naming what is wrong and leaves nothing behind: the
`sarl train` command on bad configs, tasks and run directories; checkpoints that are
tampered with (even when resealed); VLM answers with unusable prompts; VLA replies with
NaNs."""

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sarl_dist.cli.main import app
from sarl_dist.core.prompt_cache import MAX_PROMPT_CHARS
from sarl_dist.runtime import checkpoint as ckpt
from sarl_dist.runtime.learner import AGENT_FILE, REPLAY_FILE, Learner, LearnerSetup
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.runtime.vlm_service import VLMService
from sarl_dist.testing import FakeReply, FakeVLMServer, run_sarl, scripted, tiny_config
from sarl_dist.vla.base import ChunkedVLA, VLAError
from sarl_dist.vla.client import WebsocketVLA
from sarl_dist.vla.server import PolicyServer

CONFIG = "configs/skill_chain.yaml"
LONG = "pick " * 2048  # 10 kB


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "env.task=chain-99"], "env.task"),
        (["--set", "env.kind=libero", "--set", "env.libero.suite=libero_11"], "env.libero.suite"),
        (["--set", "env.kind=libero", "--set", "env.task=99"], "env.task: index 99"),
        (["--set", "train.episodes=many"], "train.episodes"),
        (["--set", "cache.seed_prompts=['  ']"], "cache.seed_prompts: seed prompt 0"),
        (["--set", f"cache.seed_prompts=[{LONG}]"], f"at most {MAX_PROMPT_CHARS} characters"),
        (["--set", "vlm.backend=gemini"], "GEMINI_API_KEY"),
    ],
)
def test_bad_configs_stop_the_command_and_create_nothing(tmp_path, monkeypatch, args, message):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", CONFIG, "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_malformed_yaml_stops_the_command(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {episodes: [\n")
    result = CliRunner().invoke(app, ["train", str(bad), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "not valid YAML" in result.output


def test_resume_refuses_a_tampered_checkpoint_or_another_config(tmp_path):
    run = RunDir.create(tmp_path / "run", tiny_config())
    directory = run.checkpoint_dir(4)
    (directory / AGENT_FILE).write_bytes(b"weights")
    ckpt.seal(directory, {"episodes": 4})
    (directory / AGENT_FILE).write_bytes(b"weightz")
    run.close()
    result = CliRunner().invoke(app, ["train", "--resume", str(run.path)])
    assert result.exit_code == 2 and "does not match its checksum" in result.output
    other = CliRunner().invoke(app, ["train", CONFIG, "--resume", str(run.path)])
    assert other.exit_code == 2 and "belongs to a different config" in other.output


@pytest.mark.usefixtures("ray_cluster")
def test_a_resealed_checkpoint_with_a_pickle_or_a_truncated_replay_is_refused(tmp_path):
    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self):
            return (marker.touch, ())

    cfg = tiny_config()
    directory = tmp_path / "checkpoints" / "ep-0000004"
    directory.mkdir(parents=True)
    Learner(LearnerSetup.of(cfg), 32).save(str(directory))
    good = (directory / REPLAY_FILE).read_bytes()
    buf = io.BytesIO()
    torch.save({"q": Exploit()}, buf)
    (directory / AGENT_FILE).write_bytes(buf.getvalue())
    ckpt.seal(directory, {"episodes": 4})
    with pytest.raises(ckpt.CheckpointError, match="cannot be loaded: UnpicklingError"):
        Learner(LearnerSetup.of(cfg), 32, checkpoints=str(directory.parent))
    assert not marker.exists()
    Learner(LearnerSetup.of(cfg), 32).save(str(directory))
    (directory / REPLAY_FILE).write_bytes(good[: len(good) // 2])
    ckpt.seal(directory, {"episodes": 4})
    with pytest.raises(ckpt.CheckpointError, match="cannot be loaded"):
        Learner(LearnerSetup.of(cfg), 32, checkpoints=str(directory.parent))


def test_unusable_prompts_in_a_vlm_answer_are_rejected_not_cached(monkeypatch, caplog):
    import asyncio

    monkeypatch.setenv("GEMINI_API_KEY", "k")
    answer = {"prompts": ["", LONG, "open the drawer"]}
    with FakeVLMServer(scripted(FakeReply.json(answer))) as server:
        cfg = tiny_config("vlm.backend=gemini", f"vlm.gemini.base_url={server.url}")
        svc = VLMService(cfg, "open the drawer, then close the gate")
        with caplog.at_level(logging.WARNING):
            _ids, texts = asyncio.run(svc.propose(np.zeros((64, 64, 3), np.uint8)))
    assert texts == ["open the drawer", "reset to home"]
    assert all(0 < len(t) <= MAX_PROMPT_CHARS for t in svc.cache.texts)
    assert svc.stats()["rejected"] == 1 and "at most 512 characters" in caplog.text


class NaNPolicy:
    """A broken VLA: the right shape, not finite."""

    def infer(self, obs):
        return {"actions": np.full((10, 7), np.nan, np.float32)}

    def reset(self):
        pass


def test_a_vla_reply_with_nans_is_refused_before_any_step():
    srv = PolicyServer(NaNPolicy(), port=0).start_background()
    try:
        chunked = ChunkedVLA(WebsocketVLA("127.0.0.1", srv.port, connect_timeout=2), 5, 7)
        with pytest.raises(VLAError, match="non-finite"):
            chunked.next_action(dict)
    finally:
        srv.stop()


SHORT_RUN = [
    *("--set", "train.episodes=8", "--set", "train.checkpoint_every=4"),
    *("--set", "eval.every=8", "--set", "eval.episodes=2", "--no-progress"),
]


@pytest.mark.parametrize("where", ["under a file", "in /sys"])
def test_an_unwritable_out_is_one_line_naming_the_path(tmp_path, where):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = blocker / "run" if where == "under a file" else Path("/sys/sarl-test-run")
    proc = run_sarl("train", CONFIG, "--out", str(out), *SHORT_RUN)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()  # one line, no traceback
    named = blocker / "run" if where == "under a file" else out
    causes = ["Not a directory"] if where == "under a file" else [
        "Operation not permitted", "Read-only file system", "Permission denied"]  # fmt: skip
    assert line.startswith(f"error: {named}: ") and any(c in line for c in causes), line


def test_a_full_disk_at_a_checkpoint_leaves_nothing_a_resume_trips_over(tmp_path):
    out = tmp_path / "run"
    doomed = out / "checkpoints" / "ep-0000004"
    doomed.mkdir(parents=True)
    for name in (REPLAY_FILE, f"{REPLAY_FILE}.tmp"):  # however it is written: ENOSPC
        (doomed / name).symlink_to("/dev/full")
    proc = run_sarl("train", CONFIG, "--out", str(out), *SHORT_RUN, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: could not write checkpoint {doomed}: OSError: [Errno 28] No space left on device"
    ]
    assert not doomed.exists()  # removed whole
    resumed = run_sarl("train", "--resume", str(out), "--no-progress", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    episodes = RunDir.open(out).read_jsonl("episodes.jsonl")
    assert sorted(e["episode"] for e in episodes) == list(range(8))
