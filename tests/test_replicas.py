"""Policy server replicas: workers spread over them and move off one that dies, with real
servers (`sarl serve-vla` subprocesses of VLAServer actors) on a real local Ray."""

import json
import os
import sys
import threading
import time

import pytest
import ray

from sarl_dist.runtime.driver import Driver
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.runtime.vla_server import VLAServer, VLAServerError
from sarl_dist.testing import tiny_config
from sarl_dist.vla.base import VLAError
from sarl_dist.vla.client import VLAConnectionLostError, WebsocketVLA
from sarl_dist.vla.server import PolicyServer
from sarl_dist.vla.skill_chain import SkillChainVLA

SERVE = [sys.executable, "-m", "sarl_dist.cli.main", "serve-vla", "--config", "{config}"]
SERVE += ["--policy", "{policy}", "--port", "{port}"]
REPLICAS = [
    "vla.kind=skill",
    "vla.served_policy=skill_chain",
    f"vla.server_command={json.dumps(SERVE)}",
    "vla.replicas=2",
    "vla.failover_after=1",
    "vla.server_start_timeout=60",
]
OBS = {"observation/state": [0.0] * 8, "prompt": "open the drawer"}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_client_moves_to_another_replica_when_its_own_stays_away():
    cfg = tiny_config()
    servers = [
        PolicyServer(SkillChainVLA(cfg.env.skill_chain), port=0).start_background()
        for _ in range(2)
    ]
    first, second = (("127.0.0.1", s.port) for s in servers)
    client = WebsocketVLA(*first, connect_timeout=2, others=[second], failover_after=0.5)
    assert client.uri.endswith(f":{first[1]}") and client.infer(OBS)["actions"].shape[0] == 10
    servers[0].stop()
    with pytest.raises(VLAConnectionLostError, match=rf"to ws://127\.0\.0\.1:{second[1]}"):
        client.infer(OBS)
    assert client.uri.endswith(f":{second[1]}") and client.infer(OBS)["actions"].shape[0] == 10
    servers[1].stop()
    start = time.monotonic()
    with pytest.raises(VLAError, match=rf"no policy server at .*:{second[1]}.*:{first[1]}"):
        client.infer(OBS)
    assert time.monotonic() - start < 5  # an error by the deadline, not a hang


def test_a_server_command_that_fails_is_reported_with_its_output():
    command = [sys.executable, "-c", "raise SystemExit('no GPU {port}')"]
    cfg = tiny_config("vla.kind=skill", f"vla.server_command={json.dumps(command)}")
    with pytest.raises(VLAServerError, match=r"exited with 1: no GPU \d+"):
        VLAServer(cfg)


@pytest.mark.usefixtures("ray_cluster")
def test_killing_one_of_two_servers_mid_run_moves_its_workers_to_the_survivor(tmp_path):
    cfg = tiny_config(
        *REPLICAS,
        "runtime.num_workers=4",
        "train.episodes=24",
        "train.checkpoint_every=24",
        "eval.every=24",
        "eval.episodes=4",
        "env.skill_chain.step_seconds=0.005",
    )
    run = RunDir.create(tmp_path / "run", cfg)
    driver = Driver(cfg, run, show_progress=False)
    killed: dict = {}

    def kill_a_replica_mid_run() -> None:
        log = run.path / "episodes.jsonl"
        while not log.exists() or len(log.read_text().splitlines()) < 6:
            time.sleep(0.02)
        victim = driver.actors.vla_servers[0]
        killed["address"] = ray.get(victim.address.remote())
        killed["pid"] = ray.get(victim.pid.remote())
        ray.kill(victim)
        killed["after"] = len(log.read_text().splitlines())

    try:
        driver.start(None)
        addresses = [ray.get(s.address.remote()) for s in driver.actors.vla_servers]
        pids = [ray.get(s.pid.remote()) for s in driver.actors.vla_servers]
        assert len(set(addresses)) == 2 and all(_alive(p) and p != os.getpid() for p in pids)
        killer = threading.Thread(target=kill_a_replica_mid_run, daemon=True)
        killer.start()
        summary = driver.train()
        killer.join(5)
    finally:
        driver.stop()
    assert killed, "the run ended before the kill"
    episodes = run.read_jsonl("episodes.jsonl")
    assert sorted(e["episode"] for e in episodes) == list(range(24))
    assert summary["episodes"] == 24 and summary["replay_size"] == sum(
        e["decisions"] for e in episodes
    )
    dead = "ws://{}:{}".format(*killed["address"])
    before = {e["worker"]: e["vla_server"] for e in episodes[:6]}
    assert {before[w] for w in before} == {"ws://{}:{}".format(*a) for a in addresses}
    # Episodes the driver had not yet seen when the kill landed may still be the dead one's.
    later = episodes[killed["after"] + cfg.runtime.num_workers :]
    assert {e["worker"] for e in later} == set(range(4))
    assert all(e["vla_server"] != dead for e in later)
    assert summary["faults"]["vla_disconnect"] >= 1
    for failure in run.read_jsonl("failures.jsonl"):
        assert failure["kind"] == "vla_disconnect" and "lost mid-request" in failure["error"]
    deadline = time.monotonic() + 10
    while _alive(killed["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(killed["pid"])  # the server subprocess died with its actor
