"""`runtime.mode: local`: the whole run in one process, without Ray, through the same
driver, scheduler, workers and rollout loop; its episodes are the Ray run's episodes."""

import json
import os
from pathlib import Path

import pytest

from sarl_dist.runtime.driver import run_training
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.testing import run_sarl, tiny_config

# One worker and no gradient step (warm-up beyond the run's transitions): every choice
# follows from the seeds, so local and Ray runs must choose the same prompts.
SAME = (
    "runtime.num_workers=1",
    "train.episodes=12",
    "train.checkpoint_every=6",
    "eval.every=6",
    "eval.episodes=3",
    "learner.warmup=100000",
)


def _prompts(run: RunDir) -> list[list[str]]:
    """Each training episode's prompts, by episode (two finished episodes of a worker may
    be committed in either order)."""
    episodes = sorted(run.read_jsonl("episodes.jsonl"), key=lambda e: e["episode"])
    return [[text for _, text in e["prompts"]] for e in episodes]


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize("method", ["sarl", "random"])
def test_local_and_ray_runs_choose_the_same_prompts(tmp_path, method):
    runs = {}
    for mode in ("ray", "local"):
        cfg = tiny_config(*SAME, f"method={method}", f"runtime.mode={mode}")
        runs[mode] = RunDir.create(tmp_path / mode, cfg)
        run_training(cfg, runs[mode], show_progress=False)
    prompts = {mode: _prompts(run) for mode, run in runs.items()}
    assert len(prompts["local"]) == 12 and len({tuple(p) for p in prompts["local"]}) > 6
    assert prompts["local"] == prompts["ray"]
    evals = {mode: run.read_jsonl("eval_episodes.jsonl") for mode, run in runs.items()}
    assert [e["prompts"] for e in evals["local"]] == [e["prompts"] for e in evals["ray"]]


def test_sarl_train_in_local_mode_starts_no_ray(tmp_path):
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    out = tmp_path / "run"
    sets = [a for o in ("runtime.mode=local", *SAME) for a in ("--set", o)]
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    proc = run_sarl("train", "configs/skill_chain.yaml", "--out", str(out), "--no-progress", *sets,
                    env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["episodes"] == 12
    assert not any(Path(ray_tmp).iterdir())  # no Ray session was started
