"""Batched serving (vla/server.py): many openpi clients, one policy server, over real
websockets on 127.0.0.1."""

import importlib.util
import json
import threading
import time

import numpy as np
import pytest
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.sync.client import connect

from sarl_dist.config import ConfigError
from sarl_dist.runtime.driver import run_training
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.testing import tiny_config
from sarl_dist.vla import make_server_policy
from sarl_dist.vla.base import BatchedPolicy, ChunkedVLA
from sarl_dist.vla.client import WebsocketVLA
from sarl_dist.vla.neural import NeuralStandIn, example
from sarl_dist.vla.openpi_policy import OpenpiPolicy
from sarl_dist.vla.server import PolicyServer


class Echo:
    """openpi's `infer(obs) -> {"actions": ...}`: a chunk that names its observation. Each
    call takes `delay` seconds, so requests pile up while it runs; calls are recorded."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay, self.calls, self.inside = delay, [], 0
        self.overlapped = False

    def infer(self, obs):
        return self._call([obs])[0]

    def reset(self):
        pass

    def _call(self, batch):
        self.inside += 1
        self.overlapped |= self.inside > 1
        self.calls.append(len(batch))
        time.sleep(self.delay)
        self.inside -= 1
        states = np.stack([np.asarray(o["observation/state"], np.float32) for o in batch])
        chunks = states[:, None, :7] * np.arange(1, 11, dtype=np.float32)[None, :, None]
        return [{"actions": c} for c in chunks]


class BatchedEcho(Echo):
    def infer_batch(self, batch):
        return self._call(batch)


def _obs(i: int) -> dict:
    return {"observation/state": np.full(8, i, np.float32), "prompt": f"task {i}"}


def _concurrently(port: int, observations: list[dict]) -> list[dict]:
    """Each observation from its own openpi client, all at once; the replies in order."""
    clients = [WebsocketClientPolicy("127.0.0.1", port) for _ in observations]
    replies: list = [None] * len(observations)
    go = threading.Barrier(len(observations))

    def ask(i: int) -> None:
        go.wait()
        try:
            replies[i] = clients[i].infer(observations[i])
        except Exception as exc:  # the test reads it
            replies[i] = exc

    threads = [
        threading.Thread(target=ask, args=(i,), daemon=True) for i in range(len(observations))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return replies


@pytest.fixture
def serve():
    servers = []

    def start(policy, **options) -> PolicyServer:
        servers.append(PolicyServer(policy, port=0, **options).start_background())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_concurrent_clients_each_get_their_own_chunk_from_one_batched_call(serve):
    policy = BatchedEcho()
    server = serve(policy, max_batch=8, batch_wait_ms=200)
    observations = [_obs(i) for i in range(6)]
    replies = _concurrently(server.port, observations)
    for obs, reply in zip(observations, replies, strict=True):
        assert np.array_equal(reply["actions"], Echo().infer(obs)["actions"])
        assert reply["server_timing"]["batch_size"] == 6
        assert reply["server_timing"]["queue_ms"] >= 0 and reply["server_timing"]["infer_ms"] > 0
    assert policy.calls == [6] and server.batch_sizes == {6: 1}


def test_the_neural_stand_in_answers_a_batch_as_it_answers_each_alone(serve):
    policy = NeuralStandIn(width=64, blocks=1)
    assert isinstance(policy, BatchedPolicy)
    server = serve(policy, max_batch=8, batch_wait_ms=200)
    observations = [example(i, prompt=f"pick up object {i}") for i in range(4)]
    replies = _concurrently(server.port, observations)
    assert server.batch_sizes == {4: 1}
    for obs, reply in zip(observations, replies, strict=True):
        assert reply["actions"].shape == (10, 7)
        # one bfloat16 matmul over 4 rows vs over 1: the same up to rounding
        np.testing.assert_allclose(reply["actions"], policy.infer(obs)["actions"], atol=2e-2)
    assert not np.allclose(replies[0]["actions"], replies[1]["actions"], atol=2e-2)


def test_batches_never_exceed_max_batch(serve):
    policy = BatchedEcho()
    server = serve(policy, max_batch=2, batch_wait_ms=100)
    replies = _concurrently(server.port, [_obs(i) for i in range(7)])
    assert all(r["server_timing"]["batch_size"] <= 2 for r in replies)
    assert max(policy.calls) == 2 and sum(policy.calls) == 7


def test_a_lone_request_is_served_after_at_most_the_wait(serve):
    server = serve(BatchedEcho(delay=0.0), max_batch=8, batch_wait_ms=300)
    client = WebsocketClientPolicy("127.0.0.1", server.port)
    alone = client.infer(_obs(1))["server_timing"]
    assert alone["queue_ms"] < 100  # no other connection: no company to wait for
    idle = WebsocketClientPolicy("127.0.0.1", server.port)  # could send, but does not
    start = time.monotonic()
    reply = client.infer(_obs(1))
    took = time.monotonic() - start
    assert 250 <= reply["server_timing"]["queue_ms"] <= 400  # it waited for company, then went
    assert took < 1.0 and reply["server_timing"]["batch_size"] == 1
    assert idle.get_server_metadata() == {}


def test_a_policy_without_infer_batch_is_served_one_request_at_a_time(serve):
    policy = Echo(delay=0.02)
    server = serve(policy, max_batch=8, batch_wait_ms=50)
    observations = [_obs(i) for i in range(5)]
    replies = _concurrently(server.port, observations)
    for obs, reply in zip(observations, replies, strict=True):
        assert np.array_equal(reply["actions"], policy.infer(obs)["actions"])
        assert reply["server_timing"]["batch_size"] == 1
    assert server.batch_sizes == {1: 5} and not policy.overlapped


def test_a_bad_observation_fails_only_its_own_connection(serve):
    """The stand-in refuses a batch holding a wrong-sized image; the server retries it one
    by one, so only the bad request gets openpi's error (a text frame, then closed)."""
    server = serve(NeuralStandIn(width=32, blocks=1), max_batch=8, batch_wait_ms=300)
    good = [example(i) for i in range(3)]
    bad = {**example(9), "observation/image": np.zeros((8, 8, 3), np.uint8)}
    replies = _concurrently(server.port, [*good, bad])
    assert all(r["actions"].shape == (10, 7) for r in replies[:3])
    assert "observation/image of shape (8, 8, 3)" in str(replies[3])
    with connect(f"ws://127.0.0.1:{server.port}") as ws:  # a frame no decoder accepts
        ws.recv(timeout=5)
        ws.send(b"\xc1 not msgpack")
        assert "WireError" in ws.recv(timeout=5)
    assert _concurrently(server.port, good[:1])[0]["actions"].shape == (10, 7)


class Mute(Echo):
    """A policy whose reply is not a dict (None): a clean error, and the server goes on."""

    def infer(self, obs):
        return None if obs["prompt"] == "mute" else super().infer(obs)


def test_a_reply_that_is_not_a_dict_is_an_error_and_the_server_goes_on(serve):
    server = serve(Mute(delay=0.0))
    failed = _concurrently(server.port, [{**_obs(1), "prompt": "mute"}])[0]
    assert "the policy answered a NoneType, not a dict" in str(failed)
    assert _concurrently(server.port, [_obs(2)])[0]["actions"].shape == (10, 7)


class OpenpiLike:
    """openpi's Policy as the server sees it: infer(obs: dict) -> dict, and metadata."""

    @property
    def metadata(self) -> dict:
        return {"action_horizon": 10}

    def infer(self, obs: dict) -> dict:
        return {"actions": np.tile(obs["observation/state"][:7], (10, 1)), "policy_timing": {}}


class OpenpiLikeBatched(OpenpiLike):
    def infer_batch(self, batch: list[dict]) -> list[dict]:
        return [self.infer(obs) for obs in batch]


def test_openpi_policies_are_served_batched_exactly_when_they_offer_it(serve):
    plain, batched = OpenpiPolicy(OpenpiLike()), OpenpiPolicy(OpenpiLikeBatched())
    assert not isinstance(plain, BatchedPolicy) and isinstance(batched, BatchedPolicy)
    for policy, sizes in ((plain, {1: 4}), (batched, {4: 1})):
        server = serve(policy, metadata=policy.metadata, max_batch=8, batch_wait_ms=300)
        assert WebsocketClientPolicy("127.0.0.1", server.port).get_server_metadata() == {
            "action_horizon": 10
        }
        replies = _concurrently(server.port, [_obs(i) for i in range(4)])
        assert [r["actions"][0, 0] for r in replies] == [0, 1, 2, 3]
        assert server.batch_sizes == sizes


@pytest.mark.skipif(importlib.util.find_spec("openpi") is not None, reason="openpi installed")
def test_serving_openpi_without_openpi_says_what_is_missing():
    with pytest.raises(ValueError, match="needs openpi installed"):
        make_server_policy("openpi", tiny_config())


def test_serve_vla_serves_the_neural_stand_in():
    cfg = tiny_config("vla.neural_width=64", "vla.neural_blocks=2")
    policy, metadata = make_server_policy("neural", cfg)
    assert isinstance(policy, BatchedPolicy) and len(policy.net.blocks) == 2
    assert metadata == {"policy": "neural", "action_dim": 7, "action_horizon": 10}


@pytest.mark.parametrize(
    "override", ["vla.max_batch=0", "vla.max_batch=1000", "vla.batch_wait_ms=-1"]
)
def test_batching_settings_are_checked(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        tiny_config(override)


def test_a_worker_reads_how_the_server_served_it(serve):
    """ChunkedVLA keeps each reply's server_timing; the worker puts it in the episode's
    summary (vla_timing) and the run's metrics."""
    server = serve(BatchedEcho(delay=0.01), max_batch=8, batch_wait_ms=0)
    vla = ChunkedVLA(WebsocketVLA("127.0.0.1", server.port), replan_steps=5, action_dim=7)
    for _ in range(15):  # three chunks
        vla.next_action(lambda: _obs(2))
    timing = vla.server_timing()
    assert timing["requests"] == 3 and timing["batch_size"] == 1
    assert timing["compute_ms"] >= 10 and timing["queue_ms"] >= 0
    assert vla.server_timing() is None  # drained


def test_a_run_reports_how_its_policy_server_served_it(tmp_path):
    cfg = tiny_config(
        "runtime.mode=local",
        "runtime.num_workers=1",
        "train.episodes=3",
        "eval.every=3",
        "eval.episodes=1",
        "vla.kind=skill",
        "vla.served_policy=skill_chain",
    )
    run = RunDir.create(tmp_path / "run", cfg)
    run_training(cfg, run, show_progress=False)
    episodes = run.read_jsonl("episodes.jsonl")
    assert all(e["vla_timing"]["requests"] >= 1 for e in episodes)
    assert all(e["vla_timing"]["batch_size"] == 1 for e in episodes)  # one worker
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["vla_batch_size"] == 1 and summary["vla_compute_ms_p50"] >= 0
