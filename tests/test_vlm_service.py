"""The VLMService: merging, concurrent batches, the answer store, fallbacks by kind, no
network for offline proposers, keys never logged or written, a Ray run on a remote
backend with its meters in summary.json, and workers answering scenes they have seen
from their own copies with the service's counts kept exact."""

import asyncio
import json
import logging
import socket
import time
from types import SimpleNamespace

import numpy as np
import pytest

from sarl_dist.runtime import compute, worker
from sarl_dist.runtime.driver import run_training
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.runtime.vlm_service import VLMService, append_responses, load_responses
from sarl_dist.runtime.worker import VLMCandidates
from sarl_dist.testing import FakeReply, FakeVLMServer, scripted, tiny_config
from sarl_dist.vlm.base import VLMUnusableError

TASK = "put the black bowl in the bottom drawer of the cabinet and close it"
KEY = "test-key-9876543210"
OPEN = {"prompts": ["pick up the black bowl", "open the bottom drawer", "close the drawer"]}
FAST = ("vlm.timeout=0.4", "vlm.deadline=5", "vlm.retry_delay=0.01", "vlm.retry_max_delay=0.02")


@pytest.fixture(autouse=True)
def _gemini_key(monkeypatch):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)


def service(server, *overrides, responses=None, cache_state=None):
    cfg = tiny_config("vlm.backend=gemini", f"vlm.gemini.base_url={server.url}", *FAST, *overrides)
    return VLMService(cfg, TASK, cache_state, responses)


def frame(value):
    return np.full((64, 64, 3), value, np.uint8)


def gather(svc, images):
    async def run():
        start = time.perf_counter()
        results = await asyncio.gather(*(svc.propose(im) for im in images))
        return results, time.perf_counter() - start

    return asyncio.run(run())


def test_identical_requests_merge_into_one_call_then_hit_the_cache():
    with FakeVLMServer(scripted(FakeReply.json(OPEN, delay=0.2))) as server:
        svc = service(server)
        first, _ = gather(svc, [frame(1)] * 8)
        again, elapsed = gather(svc, [frame(1)] * 8)
    assert len(server.calls) == 1
    assert all(r == first[0] for r in first + again)
    ids, texts = first[0]
    assert texts == [*OPEN["prompts"], "reset to home"] and ids[-1] == 0
    stats = svc.stats()
    assert (stats["requests"], stats["calls"], stats["merged"], stats["cache_hits"]) == (
        16,
        1,
        7,
        8,
    )
    assert elapsed < 0.1


def test_distinct_requests_are_sent_concurrently_up_to_the_limit():
    delay, patient = 0.3, "vlm.timeout=5"  # a loaded machine must not turn delays into retries
    with FakeVLMServer(scripted(FakeReply.json(OPEN, delay=delay))) as server:
        gather(
            service(server, patient), [frame(0)]
        )  # SDK import and first connection, off the clock
        _, wide = gather(service(server, patient), [frame(v) for v in range(1, 9)])
        _, narrow = gather(
            service(server, patient, "vlm.concurrency=2"), [frame(v) for v in range(9, 13)]
        )
    assert wide < 5 * delay  # eight calls in about the time of one (in turn: 8 x delay)
    assert narrow >= 2 * delay  # two at a time: two rounds
    assert len(server.calls) == 13


@pytest.mark.parametrize(
    ("replies", "kind"),
    [
        ((FakeReply.error(503),), "http_503"),
        ((FakeReply(text="{}", delay=3.0),), "timeout"),
        ((FakeReply(text="no json here"),), "malformed"),
        ((FakeReply(text=None, finish_reason="SAFETY"),), "safety"),
    ],
)
def test_failures_fall_back_to_the_cache_counted_by_kind(replies, kind, caplog):
    seeded = ("cache.seed_prompts=[open the bottom drawer, pick up the black bowl]",)
    with FakeVLMServer(scripted(*replies)) as server:
        svc = service(server, "vlm.attempts=2", *seeded)
        with caplog.at_level(logging.WARNING):
            (result,), elapsed = gather(svc, [frame(3)])
        calls = len(server.calls)
    _ids, texts = result
    assert set(texts) == {TASK, "open the bottom drawer", "pick up the black bowl", "reset to home"}
    stats = svc.stats()
    assert stats["errors"] == {kind: 1} and stats["fallbacks"] == 1
    assert calls == (2 if kind in ("http_503", "timeout") else 1)
    assert kind in caplog.text and elapsed < 2.5
    assert svc.drain_responses() == []  # a failure is not remembered as an answer


def test_a_frozen_cache_never_grows_from_an_answer():
    choices = [{"index": 1, "prompt": TASK}, {"index": 7, "prompt": "dance"}]
    state = {"capacity": 3, "texts": ["reset to home", TASK, "close the drawer"]}
    with FakeVLMServer(scripted(FakeReply.json({"choices": choices}))) as server:
        svc = service(server, "cache.capacity=3", cache_state=state)
        ((ids, _texts),), _ = gather(svc, [frame(5)])
    assert ids == [1, 0] and svc.cache.texts == state["texts"]
    assert svc.stats()["rejected"] == 1 and svc.stats()["fallbacks"] == 0


def test_answers_persist_so_a_resumed_run_does_not_pay_again(tmp_path):
    store = tmp_path / "vlm_responses.jsonl"
    with FakeVLMServer(scripted(FakeReply.json(OPEN))) as server:
        first = service(server)
        (before,), _ = gather(first, [frame(7)])
        append_responses(store, first.drain_responses())
        with open(store, "a") as f:
            f.write('{"key": "torn')  # a crash mid-write
        resumed = service(server, responses=load_responses(store), cache_state=first.cache_state())
        (after,), _ = gather(resumed, [frame(7)])
        _other_frame, _ = gather(resumed, [frame(8)])
    assert after == before
    assert len(server.calls) == 2  # frame 7 once, frame 8 once
    assert resumed.stats()["cache_hits"] == 1


def test_offline_proposers_make_no_network_access(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access: {args[1:]}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for overrides in (("env.kind=libero", "vlm.backend=template"), ()):
        cfg = tiny_config(*overrides)
        from sarl_dist.envs import env_spec

        svc = VLMService(cfg, env_spec(cfg).task)
        results, _ = gather(svc, [frame(v) for v in range(6)])
        assert all(len(ids) >= 2 for ids, _ in results)
        assert svc.stats()["errors"] == {} and svc.stats()["fallbacks"] == 0


def test_the_key_is_never_logged_or_written(tmp_path, caplog):
    replies = scripted(FakeReply.error(500), FakeReply.json(OPEN))
    with FakeVLMServer(replies) as server, caplog.at_level(logging.DEBUG):
        svc = service(server, "vlm.attempts=1")
        gather(svc, [frame(1), frame(2)])
        store = tmp_path / "store.jsonl"
        append_responses(store, svc.drain_responses())
    assert server.calls[0].api_key == KEY  # it was sent, in its header
    written = caplog.text + store.read_text() + json.dumps(svc.stats()) + repr(svc.cfg)
    assert KEY not in written and "http_500" in caplog.text


@pytest.mark.usefixtures("ray_cluster")
def test_a_run_on_a_remote_vlm_meters_it_in_summary_json(tmp_path):
    with FakeVLMServer(scripted(FakeReply.json(OPEN))) as server:
        cfg = tiny_config(
            "vlm.backend=openai",
            f"vlm.openai.base_url={server.url}/v1",
            *FAST,
            "train.episodes=4",
            "eval.every=4",
            "eval.episodes=2",
        )
        run = RunDir.create(tmp_path / "run", cfg)
        summary = run_training(cfg, run, show_progress=False)
        calls = len(server.calls)
    vlm = json.loads((run.path / "summary.json").read_text())["vlm"]
    assert vlm == summary["vlm"] and vlm["backend"] == "openai"
    assert vlm["calls"] == calls > 0 and vlm["tokens_in"] == 300 * calls
    assert vlm["requests"] == vlm["calls"] + vlm["cache_hits"] + vlm["merged"]
    assert vlm["latency_ms_p95"] >= vlm["latency_ms_p50"] > 0
    stored = load_responses(run.path / "vlm_responses.jsonl")
    assert len(stored) == calls and all(e["prompts"] == OPEN["prompts"] for e in stored)


def test_http_attempts_and_retries_are_metered_by_status():
    replies = scripted(FakeReply.error(503), FakeReply.error(503), FakeReply.json(OPEN))
    with FakeVLMServer(replies) as server:
        svc = service(server, "vlm.attempts=3")
        gather(svc, [frame(1)])  # 503, 503, 200
        gather(svc, [frame(2)])  # 200
    stats = svc.stats()
    assert stats["http_attempts"] == {"503": 2, "200": 2}
    assert (stats["calls"], stats["http_retries"]) == (2, 2)


def test_refusals_in_a_row_stop_the_service_and_an_answer_resets_the_count():
    replies = [401, 401, 200, 403, 401, 400]
    script = scripted(*(FakeReply.json(OPEN) if r == 200 else FakeReply.error(r) for r in replies))
    with FakeVLMServer(script) as server:
        svc = service(server, "vlm.attempts=1", "vlm.max_refusals=3")
        for value in range(5):  # two refusals, an answer, two refusals: answered from the cache
            gather(svc, [frame(value)])
        with pytest.raises(VLMUnusableError, match="refused 3 queries in a row") as refused:
            gather(svc, [frame(5)])
        assert "http_400" in str(refused.value) and "vlm.gemini.model" in str(refused.value)
        with pytest.raises(VLMUnusableError):  # from now on, without asking
            gather(svc, [frame(6)])
        assert len(server.calls) == 6
    assert svc.stats()["fallbacks"] == 4 and svc.stats()["refused"]


@pytest.mark.usefixtures("ray_cluster")
def test_a_vlm_that_starts_refusing_stops_the_run_checkpointed_and_it_resumes(tmp_path):
    from sarl_dist.runtime import checkpoint as ckpt

    refusing = {"from_call": 2}

    def script(i, _call):
        return FakeReply.error(401) if i >= refusing["from_call"] else FakeReply.json(OPEN)

    with FakeVLMServer(script) as server:
        cfg = tiny_config(  # openai: no key to hand to Ray's processes
            "vlm.backend=openai",
            f"vlm.openai.base_url={server.url}/v1",
            *FAST,
            "vlm.attempts=1",
            "train.episodes=8",
            "eval.every=8",
            "eval.episodes=2",
        )
        stopped = run_training(cfg, RunDir.create(tmp_path / "run", cfg), show_progress=False)
        assert stopped["failed"] and "queries in a row" in stopped["interrupted"]
        latest = ckpt.latest(tmp_path / "run" / "checkpoints")
        assert ckpt.episodes_of(latest) == stopped["episodes"] < 8  # checkpointed where it stood
        refusing["from_call"] = 10**9  # the key is fixed
        done = run_training(cfg, RunDir.open(tmp_path / "run"), resume=True, show_progress=False)
    assert done["episodes"] == 8 and "failed" not in done
    episodes = RunDir.open(tmp_path / "run").read_jsonl("episodes.jsonl")
    assert sorted(e["episode"] for e in episodes) == list(range(8))


PATIENT = "vlm.timeout=5"  # a loaded machine must not turn a slow reply into a fallback
COUNTS = ("requests", "calls", "cache_hits", "merged", "fallbacks", "rejected", "tokens_in")


def ask(candidates, image):
    """One decision's A(s) through a worker's VLMCandidates: (ids, texts it had not seen)."""
    ids, texts = candidates.collect(candidates.ask(SimpleNamespace(scene=image), 0, 0, ()))
    return list(ids), texts


def test_a_workers_own_hits_are_the_services_answers_counted_exactly():
    answer = {"prompts": ["x" * 600, *OPEN["prompts"]]}  # too long: refused on every hit
    frames = [frame(v) for v in (1, 1, 2, 1, 2, 2)]
    with FakeVLMServer(scripted(FakeReply.json(answer))) as server:
        direct, own = service(server, PATIENT), service(server, PATIENT)
        expected = [asyncio.run(direct.propose(f)) for f in frames]
        candidates = VLMCandidates(compute.LocalActor(own), None)
        got, known = [], {}
        for f in frames:
            ids, texts = ask(candidates, f)
            known.update(texts)
            got.append((ids, [known[i] for i in ids]))
    assert got == expected
    assert own.stats()["requests"] == 2 and len(server.calls) == 4  # a round trip per frame
    own.count_local(**candidates.local)
    assert {k: own.stats()[k] for k in COUNTS} == {k: direct.stats()[k] for k in COUNTS}
    assert own.stats()["worker_hits"] == 4 and own.stats()["rejected"] == 6


def test_a_worker_keys_its_hits_by_the_cache_the_service_shows_it_frozen_or_not():
    state = {"capacity": 4, "texts": ["reset to home", TASK]}
    replies = scripted(
        FakeReply.json({"prompts": ["open the bottom drawer"]}),  # frame 1: the cache stays open
        FakeReply.json({"prompts": ["close the drawer"]}),  # frame 2: it is full, so frozen
        FakeReply.json({"choices": [{"index": 3, "prompt": "close the drawer"}]}),
    )
    with FakeVLMServer(replies) as server:
        svc = service(server, PATIENT, "cache.capacity=4", cache_state=state)
        candidates = VLMCandidates(compute.LocalActor(svc), None)
        assert ask(candidates, frame(1))[0] == [2, 0]
        assert ask(candidates, frame(2))[0] == [3, 0] and svc.cache.frozen
        # Frame 1 under the frozen cache is another request: the service asks the VLM again.
        assert ask(candidates, frame(1))[0] == [3, 0] and len(server.calls) == 3
        assert ask(candidates, frame(1))[0] == [3, 0] and candidates.local["hits"] == 1
        assert asyncio.run(svc.propose(frame(1)))[0] == [3, 0]
    assert svc.stats()["requests"] == 4 and svc.cache.texts[2:] == [
        "open the bottom drawer",
        "close the drawer",
    ]


def test_a_runs_vlm_counts_are_those_of_a_run_without_the_workers_own_hits(tmp_path, monkeypatch):
    overrides = ("runtime.mode=local", "runtime.num_workers=1", "train.episodes=6")
    cfg = tiny_config(*overrides, "eval.every=6", "eval.episodes=2", "learner.warmup=100000")
    vlm = {}
    for own in (True, False):
        if not own:  # every key new to the worker: each request goes to the service
            monkeypatch.setattr(worker, "scene_key", lambda image, history: (object(),))
        run = RunDir.create(tmp_path / str(own), cfg)
        vlm[own] = run_training(cfg, run, show_progress=False)["vlm"]
    local = [e["vlm_local"]["hits"] for e in run.read_jsonl("episodes.jsonl")]
    assert vlm[True]["worker_hits"] > 0 and vlm[False]["worker_hits"] == 0 == sum(local)
    assert {k: vlm[True][k] for k in COUNTS} == {k: vlm[False][k] for k in COUNTS}
