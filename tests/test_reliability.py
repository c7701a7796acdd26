"""Faults survived with real processes on a real local Ray: workers that die or raise, a
flaky VLM backend, a Learner and a VLMService killed mid-run, a VLA connection dropped.
Each run checks the same invariants: exactly the configured episodes, each once; replay
holds exactly their transitions; a prompt id means one text for the whole run."""

import pytest

from sarl_dist.core.prompt_cache import PromptCache
from sarl_dist.runtime.driver import RunError, describe, run_training
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.testing import free_ports, tiny_config
from sarl_dist.vla import make_server_policy
from sarl_dist.vla.base import VLAError
from sarl_dist.vla.server import PolicyServer
from sarl_dist.vla.skill_chain import SkillChainVLA

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _train(tmp_path, *overrides):
    cfg = tiny_config(*overrides)
    run = RunDir.create(tmp_path / "run", cfg)
    return cfg, run, run_training(cfg, run, show_progress=False)


def _check_invariants(cfg, run, summary) -> list[dict]:
    episodes = run.read_jsonl("episodes.jsonl")
    ids = [e["episode"] for e in episodes]
    assert sorted(ids) == list(range(cfg.train.episodes))  # exact count, no duplicates
    assert summary["episodes"] == cfg.train.episodes
    assert summary["replay_size"] == sum(e["decisions"] for e in episodes)
    cache = PromptCache.load(run.prompt_cache)
    for e in episodes:
        for pid, text in e["prompts"]:
            assert cache.text(pid) == text
    return episodes


def test_dying_workers_and_a_flaky_vlm_lose_nothing(tmp_path):
    cfg, run, summary = _train(
        tmp_path,
        "eval.every=8",
        "eval.episodes=2",
        "faults.kill_worker_every=3",
        "faults.vlm_failure_rate=0.3",
    )
    _check_invariants(cfg, run, summary)
    failures = run.read_jsonl("failures.jsonl")
    assert summary["faults"]["worker_died"] >= 2
    assert len(failures) == sum(summary["faults"].values())
    assert {f["kind"] for f in failures} == {"worker_died"}
    vlm = summary["vlm"]
    assert vlm["errors"]["injected"] > 0 and vlm["fallbacks"] >= vlm["errors"]["injected"]


def test_a_worker_dying_with_its_next_episode_queued_is_blamed_for_the_one_it_ran(tmp_path):
    # One worker always has its next episode queued behind the one it runs; each worker
    # dies in its third episode, so the failures must name episodes 2, 4 and 6 (and the
    # evaluation episode after 7), never the queued ones, and every episode runs once.
    cfg, run, summary = _train(
        tmp_path,
        "runtime.num_workers=1",
        "eval.at_start=false",
        "eval.every=8",
        "eval.episodes=1",
        "train.checkpoint_every=8",
        "faults.kill_worker_every=3",
    )
    _check_invariants(cfg, run, summary)
    failures = run.read_jsonl("failures.jsonl")
    assert [(f["episode"], f["kind"]) for f in failures] == [
        (2, "worker_died"),
        (4, "worker_died"),
        (6, "worker_died"),
        (-1, "worker_died"),
    ]
    assert [e["episode"] for e in run.read_jsonl("episodes.jsonl")] == list(range(8))


def test_a_killed_learner_and_vlm_service_restore_themselves(tmp_path):
    cfg, run, summary = _train(
        tmp_path,
        "eval.every=8",
        "eval.episodes=2",
        "faults.kill_learner_at=6",
        "faults.kill_vlm_at_prompt=6",
    )
    _check_invariants(cfg, run, summary)
    assert summary["learner_restarted"] and summary["vlm"]["restarted"]
    # Restored from the checkpoint at episode 4 plus commits 5 and 6 from the episode log.
    assert summary["learner_restored"] == {"checkpoint": "ep-0000004", "episodes_replayed": 2}
    # The updates lost with the old process were made again: the count is the data's.
    assert summary["updates"] == summary["replay_size"] - cfg.learner.warmup
    assert len(PromptCache.load(run.prompt_cache)) >= 6
    assert not list(run.episode_log.iterdir())  # the last checkpoint holds every episode


def test_a_dropped_vla_connection_voids_the_episode_and_a_raising_worker_is_replaced(tmp_path):
    policy, metadata = make_server_policy("skill_chain", tiny_config())
    server = PolicyServer(policy, port=0, metadata=metadata, drop_every=35).start_background()
    try:
        cfg, run, summary = _train(
            tmp_path,
            "vla.kind=websocket",
            f"vla.port={server.port}",
            "vla.connect_timeout=10",
            "eval.every=8",
            "eval.episodes=2",
            "faults.raise_in_worker_every=4",
        )
    finally:
        server.stop()
    _check_invariants(cfg, run, summary)
    faults = summary["faults"]
    assert faults["vla_disconnect"] >= 1 and faults["episode_error"] >= 1
    errors = {f["kind"]: f["error"] for f in run.read_jsonl("failures.jsonl")}
    assert errors["vla_disconnect"].startswith("VLAConnectionLostError")
    assert errors["episode_error"].startswith("InjectedFaultError")


def test_an_episode_that_keeps_failing_stops_the_run_with_its_last_error(tmp_path):
    with pytest.raises(RunError, match=r"failed 2 times .* InjectedFaultError: injected"):
        _train(
            tmp_path,
            "runtime.num_workers=1",
            "faults.raise_in_worker_every=1",
            "runtime.episode_attempts=2",
        )
    failures = RunDir.open(tmp_path / "run").read_jsonl("failures.jsonl")
    assert [(f["episode"], f["kind"]) for f in failures] == [(-1, "episode_error")] * 2


def test_the_client_reconnects_to_a_restarted_server_and_voids_the_request():
    from sarl_dist.vla.base import VLAError
    from sarl_dist.vla.client import VLAConnectionLostError, WebsocketVLA

    obs = {"observation/state": [0.0] * 8, "prompt": "open the drawer"}
    server = PolicyServer(SkillChainVLA(tiny_config().env.skill_chain), port=0).start_background()
    client = WebsocketVLA("127.0.0.1", server.port, connect_timeout=2)
    assert client.infer(obs)["actions"].shape[0] == 10
    server.stop()
    restarted = PolicyServer(SkillChainVLA(tiny_config().env.skill_chain), port=server.port)
    restarted.start_background()
    try:
        with pytest.raises(VLAConnectionLostError, match="reconnected"):
            client.infer(obs)
        assert client.infer(obs)["actions"].shape[0] == 10  # the new connection works
    finally:
        restarted.stop()
    with pytest.raises(VLAError, match="no policy server"):  # stays away: an error, not a hang
        client.infer(obs)


def test_a_worker_that_fails_in_its_constructor_is_reported_by_its_own_error(tmp_path):
    # Ray says only that the actor died in its creation task; the cause is the VLAError.
    (port,) = free_ports(1)
    cause = (
        r"ActorDiedError in its constructor: .*VLAError: "
        rf"no policy server at ws://127.0.0.1:{port} after 1s"
    )
    with pytest.raises(RunError, match=cause):
        _train(tmp_path, "vla.kind=websocket", f"vla.port={port}", "vla.connect_timeout=1")


def test_failures_are_described_by_the_actors_own_exception():
    import ray

    @ray.remote
    class Broken:
        def __init__(self):
            raise VLAError("no policy server at ws://gpu-0:8000 after 30s")

        def ready(self):
            return True

    with pytest.raises(ray.exceptions.RayActorError) as died:
        ray.get(Broken.remote().ready.remote())
    assert describe(died.value) == (
        "ActorDiedError in its constructor: "
        "sarl_dist.vla.base.VLAError: no policy server at ws://gpu-0:8000 after 30s"
    )

    @ray.remote
    def full_disk():
        with open("/dev/full", "w") as f:
            f.write("x" * 100_000)

    with pytest.raises(ray.exceptions.RayTaskError) as failed:
        ray.get(full_disk.remote())
    assert describe(failed.value) == "OSError: [Errno 28] No space left on device"
