"""The actor-learner runtime on a real local Ray cluster."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import ray

from sarl_dist.core.prompt_cache import PromptCache
from sarl_dist.envs import env_spec
from sarl_dist.runtime.driver import run_training
from sarl_dist.runtime.learner import Learner, LearnerSetup
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.runtime.vlm_service import VLMService
from sarl_dist.runtime.worker import EnvWorker
from sarl_dist.testing import make_batch, run_sarl, tiny_config

pytestmark = pytest.mark.usefixtures("ray_cluster")
ROOT = Path(__file__).resolve().parents[1]


def _episode_batch(n=3):
    return make_batch(
        list(range(n)),
        [1] * n,
        [0.0] * (n - 1) + [1.0],
        [0.0] * (n - 1) + [1.0],
        list(range(1, n + 1)),
        [[1, 2]] * (n - 1) + [[]],
        num_prompts=32,
    )


def test_an_episode_reaches_replay_once():
    learner = (
        ray.remote(Learner).options(max_concurrency=8).remote(LearnerSetup.of(tiny_config()), 32)
    )
    assert ray.get(learner.add_episode.remote(7, _episode_batch()))
    assert not ray.get(learner.add_episode.remote(7, _episode_batch()))  # a retry is ignored
    stats = ray.get(learner.wait_idle.remote())
    assert stats["replay_size"] == 3 and stats["episodes_committed"] == 1
    ray.kill(learner)


def test_workers_act_with_the_newest_published_weights():
    cfg = tiny_config("runtime.num_workers=1", "learner.warmup=0")
    learner = ray.remote(Learner).options(max_concurrency=8).remote(LearnerSetup.of(cfg), 32)
    vlm = ray.remote(VLMService).remote(cfg, env_spec(cfg).task)
    worker = ray.remote(EnvWorker).remote(cfg, 0, learner, vlm, ray.get(vlm.prompt_texts.remote()))
    versions = []
    for episode in range(3):
        ray.get(learner.add_episode.remote(episode, _episode_batch(4)))
        published = ray.get(learner.wait_idle.remote())["version"]
        summary, _ = worker.run_episode.remote(100 + episode, episode, False)
        used = ray.get(summary)["policy_versions"]
        assert set(used) == {published}
        versions.append(published)
    assert versions == sorted(versions) and len(set(versions)) == 3
    for actor in (worker, vlm, learner):
        ray.kill(actor)


def _run(tmp_path, *overrides, name="run"):
    cfg = tiny_config(*overrides)
    run = RunDir.create(tmp_path / name, cfg)
    return cfg, run, run_training(cfg, run, show_progress=False)


def test_a_short_run_writes_everything_and_ids_are_stable_across_workers(tmp_path):
    _, run, summary = _run(tmp_path, "train.episodes=10", "train.checkpoint_every=5")
    episodes = run.read_jsonl("episodes.jsonl")
    assert sorted(e["episode"] for e in episodes) == list(range(10))
    assert {e["worker"] for e in episodes} == {0, 1}
    assert summary["replay_size"] == sum(e["decisions"] for e in episodes)
    assert summary["episodes"] == 10 and summary["final_eval_success"] is not None
    assert [p[0] for p in summary["eval_curve"]] == [0, 4, 8, 10]
    for key in ("method", "seed", "wall_seconds", "updates", "vlm_calls", "eval_curve"):
        assert key in summary
    cache = PromptCache.load(sorted(run.checkpoints.iterdir())[-1] / "prompt_cache.json")
    for e in episodes:  # every worker's (id, text) pairs agree with the one cache
        for pid, text in e["prompts"]:
            assert cache.text(pid) == text
    assert (run.path / "learning_curve.png").stat().st_size > 0
    assert any((run.path / "tb").iterdir())
    assert len(run.read_jsonl("evals.jsonl")) == 4


def test_resume_finishes_without_duplicates_and_keeps_prompt_ids(tmp_path):
    cfg, run, _ = _run(tmp_path, "train.episodes=8", "train.checkpoint_every=4")
    cache_before = PromptCache.load(run.checkpoints / "ep-0000004" / "prompt_cache.json").texts
    # Simulate a driver killed after episode 6: the last checkpoint is gone, logs ran ahead.
    shutil.rmtree(run.checkpoints / "ep-0000008")
    (run.path / "summary.json").unlink()
    resumed = run_training(cfg, RunDir.open(run.path, cfg), resume=True, show_progress=False)
    episodes = [e["episode"] for e in run.read_jsonl("episodes.jsonl")]
    assert sorted(episodes) == list(range(8))
    assert resumed["episodes"] == 8
    assert [p[0] for p in resumed["eval_curve"]] == [0, 4, 8]
    cache_after = PromptCache.load(run.checkpoints / "ep-0000008" / "prompt_cache.json").texts
    assert cache_after[: len(cache_before)] == cache_before


def test_a_run_resumed_before_its_first_checkpoint_starts_over_with_one_eval_at_0(tmp_path):
    """Killed after the evaluation at 0 (logged) but before any checkpoint: the resume
    knows nothing of that evaluation, runs it again, and the logs hold it once."""
    cfg, run, _ = _run(tmp_path, "train.episodes=4", "train.checkpoint_every=4")
    shutil.rmtree(run.checkpoints)
    (run.path / "summary.json").unlink()
    run_training(cfg, RunDir.open(run.path, cfg), resume=True, show_progress=False)
    assert [e["episodes_seen"] for e in run.read_jsonl("evals.jsonl")] == [0, 4]
    points = [e["eval_point"] for e in run.read_jsonl("eval_episodes.jsonl")]
    assert points == [0] * cfg.eval.episodes + [4] * cfg.eval.episodes
    assert sorted(e["episode"] for e in run.read_jsonl("episodes.jsonl")) == list(range(4))


def test_random_baseline_does_not_learn(tmp_path):
    _, run, summary = _run(tmp_path, "method=random", "train.episodes=6")
    assert summary["updates"] == 0
    assert all(
        v == [-1] * len(v) for v in (e["policy_versions"] for e in run.read_jsonl("episodes.jsonl"))
    )


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "cli-run"
    overrides = [
        "train.episodes=4",
        "eval.every=4",
        "eval.episodes=2",
        "q.ensemble=2",
        "learner.warmup=4",
        "learner.batch_size=8",
    ]
    sets = [arg for o in overrides for arg in ("--set", o)]
    config = str(ROOT / "configs/skill_chain.yaml")
    proc = run_sarl("train", config, "--out", str(out), "--no-progress", *sets, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 4
    assert (out / "config.yaml").exists() and (out / "episodes.jsonl").exists()
    assert np.isfinite(summary["wall_seconds"])


def test_a_slow_publication_never_overwrites_a_newer_one(monkeypatch):
    # The training thread and wait_idle (another of the actor's threads) both publish. Here
    # the first publication's ray.put stalls until the second one is done (or 1 s): the
    # newest weights must still be the ones published in the end.
    import threading

    learner = Learner(LearnerSetup.of(tiny_config()), 8)
    put, second_done, calls = ray.put, threading.Event(), []

    def slow_put(value):
        calls.append(None)
        if len(calls) == 1:
            second_done.wait(1.0)
        return put(value)

    monkeypatch.setattr(ray, "put", slow_put)
    first = threading.Thread(target=learner._publish)
    first.start()
    while not calls:
        pass
    learner._publish()
    second_done.set()
    first.join()
    assert learner.stats()["version"] == learner._version == 2  # 0 at start, then 1 and 2
