"""The baselines share SARL's runtime and differ only in who picks the prompt."""

from __future__ import annotations

import pytest

from sarl_dist.config import load_config
from sarl_dist.envs import atomic_prompts, env_spec, make_env
from sarl_dist.testing import tiny_config

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _run(tmp_path, method):
    from sarl_dist.runtime.driver import run_training
    from sarl_dist.runtime.rundir import RunDir

    cfg = tiny_config(f"method={method}", "train.episodes=6", "eval.every=6", "eval.episodes=12")
    run = RunDir.create(tmp_path / method, cfg)
    summary = run_training(cfg, run, show_progress=False)
    return cfg, summary, run.read_jsonl("episodes.jsonl")


def test_zero_shot_sends_the_task_sentence_and_fails_on_the_chain(tmp_path):
    cfg, summary, episodes = _run(tmp_path, "zero_shot")
    task = env_spec(cfg).task
    assert all(text == task for e in episodes for _, text in e["prompts"])
    assert summary["final_eval_success"] == 0.0
    assert summary["vlm"]["requests"] == 0  # a fixed prompt needs no VLM


def test_oracle_follows_the_atomic_sequence_and_mostly_succeeds(tmp_path):
    cfg, summary, episodes = _run(tmp_path, "oracle")
    plan = atomic_prompts(cfg)
    for e in episodes:
        texts = [text for _, text in e["prompts"]]
        assert texts == [plan[min(t, len(plan) - 1)] for t in range(len(texts))]
    assert summary["final_eval_success"] >= 0.5  # 0.95 per stage, 3 stages


def test_vlm_only_takes_the_vlms_first_choice_with_history(tmp_path):
    _, summary, episodes = _run(tmp_path, "vlm_only")
    assert summary["vlm"]["requests"] >= sum(e["decisions"] for e in episodes)
    assert summary["final_eval_success"] >= 0.5  # the chain's VLM reads the stage off the image
    assert summary["updates"] == 0


def test_vlm_only_decides_every_40_steps_on_libero_over_the_same_episode_length():
    cfg = load_config("configs/libero10.yaml", ["method=vlm_only"])
    assert (cfg.env.decision_steps, cfg.env.max_decisions) == (40, 15)
    chain = tiny_config("method=vlm_only")
    assert chain.env.decision_steps == tiny_config().env.decision_steps


def test_candidates_are_refreshed_every_refresh_steps_low_level_steps():
    """SARL's robot protocol: decide every step, ask the VLM for candidates every 20."""
    import ray

    from sarl_dist.runtime.vlm_service import VLMService
    from sarl_dist.runtime.worker import VLMCandidates

    cfg = tiny_config("method=random", "vlm.refresh_steps=20")
    vlm = ray.remote(VLMService).remote(cfg, env_spec(cfg).task, None, {}, None, "refresh")
    env = make_env(cfg)
    env.reset(0)
    obs = env.observe()
    source = VLMCandidates(vlm, cfg.vlm.refresh_steps)
    offered = [
        source.collect(source.ask(obs, t, steps, ()))[0]
        for t, steps in enumerate([0, 10, 19, 20, 45])
    ]
    # at steps 0, 20 and 45: the service's requests and the worker's own answers together
    # (the same scene again is answered from the worker's copy)
    assert ray.get(vlm.stats.remote())["requests"] + source.local["hits"] == 3
    assert offered[1] is offered[0] and offered[2] is offered[0]  # the same proposal reused
    ray.kill(vlm)


def test_a_sweep_can_skip_the_evaluation_of_the_initial_policy(tmp_path):
    from sarl_dist.runtime.driver import run_training
    from sarl_dist.runtime.rundir import RunDir

    cfg = tiny_config("method=random", "train.episodes=4", "eval.every=2", "eval.at_start=false")
    summary = run_training(cfg, RunDir.create(tmp_path / "run", cfg), show_progress=False)
    assert [point for point, _ in summary["eval_curve"]] == [2, 4]


def _worker(cfg, name):
    import ray

    from sarl_dist.runtime.vlm_service import VLMService
    from sarl_dist.runtime.worker import EnvWorker

    vlm = ray.remote(VLMService).remote(cfg, env_spec(cfg).task, None, {}, None, name)
    return EnvWorker(cfg, 0, None, vlm, ray.get(vlm.prompt_texts.remote())), vlm


def test_a_greedy_episode_asks_for_no_candidates_of_a_state_it_discards():
    import ray

    cfg = tiny_config("method=random", "env.bootstrap_truncated=true")
    worker, vlm = _worker(cfg, "greedy")

    def requests() -> int:
        return ray.get(vlm.stats.remote())["requests"]

    asked = {}
    for greedy in (True, False):
        for seed in range(50):  # a failed episode: it runs out of decisions
            before = requests()
            summary, _ = worker.run_episode(0, seed, greedy)
            if not summary["success"]:  # the service's requests and the worker's own answers
                made = requests() - before + summary["vlm_local"]["hits"]
                asked[greedy] = (made, summary["decisions"])
                break
    # One query per decision; a stored, timed-out episode bootstraps from its last s'.
    assert asked[True][0] == asked[True][1]
    assert asked[False][0] == asked[False][1] + 1
    ray.kill(vlm)


@pytest.mark.parametrize("labelled", [False, True])
def test_a_success_a_person_may_still_overrule_keeps_its_next_candidates(labelled):
    from dataclasses import replace

    import ray

    from sarl_dist.core.replay import ReplayBuffer
    from sarl_dist.runtime.attended import relabel

    cfg = tiny_config("method=oracle")
    worker, vlm = _worker(cfg, f"labelled-{labelled}")
    worker.env.spec = replace(worker.env.spec, labelled=labelled)
    summary, batch = next(
        (s, b)
        for s, b in (worker.run_episode(0, seed, False) for seed in range(20))
        if s["success"]
    )
    assert batch.done[-1] == 1.0 and batch.next_mask[-1].any() == labelled
    failed = relabel(batch, False, worker.env.spec)  # the person says no
    replay = ReplayBuffer(64, cfg.cache.capacity)
    if labelled:
        replay.add(failed)  # it bootstraps from the candidates its worker kept
        assert replay.size == summary["decisions"]
    else:
        with pytest.raises(ValueError, match="not terminal but offer no next candidates"):
            replay.add(failed)
    ray.kill(vlm)


def test_a_new_baseline_is_one_class_and_one_registry_line(monkeypatch, tmp_path):
    """Nothing else in the code asks which method runs: a registered class is chosen by the
    config, validated, and run by the same workers and rollout loop."""
    from sarl_dist.config import ConfigError
    from sarl_dist.core.prompt_cache import RESET_ID
    from sarl_dist.methods import METHODS, Method
    from sarl_dist.runtime.driver import run_training
    from sarl_dist.runtime.rundir import RunDir

    class AlwaysHome(Method):  # a baseline: go home at every decision
        def choose(self, q, candidates, greedy, rng):
            return RESET_ID

    with pytest.raises(ConfigError, match="unknown method 'always_home'"):
        tiny_config("method=always_home")
    monkeypatch.setitem(METHODS, "always_home", AlwaysHome)
    cfg = tiny_config("method=always_home", "runtime.mode=local", "train.episodes=2",
                      "eval.every=2", "eval.episodes=1")  # fmt: skip
    run = RunDir.create(tmp_path / "run", cfg)
    summary = run_training(cfg, run, show_progress=False)
    assert summary["episodes"] == 2 and summary["updates"] == 0
    episodes = run.read_jsonl("episodes.jsonl")
    assert all(text == "reset to home" for e in episodes for _, text in e["prompts"])
