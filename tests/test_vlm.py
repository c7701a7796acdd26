"""Remote VLM backends through their real SDKs against a local HTTP server, the answer
schema and its repair rules, the template proposer on LIBERO scenes, `sarl propose`."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarl_dist.config import ConfigError
from sarl_dist.envs.libero import ORACLE_PROMPTS
from sarl_dist.testing import (
    FakeReply,
    FakeVLMServer,
    free_ports,
    run_sarl,
    scripted,
    tiny_config,
)
from sarl_dist.vlm import ask, make_proposer
from sarl_dist.vlm.base import HistoryItem, ProposalError, ProposalRequest

ROOT = Path(__file__).resolve().parents[1]
TASK = "put the black bowl in the bottom drawer of the cabinet and close it"
KEY = "test-key-0123456789"
FAST_HTTP = (
    "vlm.timeout=0.4",
    "vlm.deadline=5",
    "vlm.attempts=3",
    "vlm.retry_delay=0.01",
    "vlm.retry_max_delay=0.02",
)
OPEN = {"prompts": ["put the black bowl in the bottom drawer of the cabinet", "close the drawer"]}
IMAGE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def _gemini_key(monkeypatch):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)


def remote_config(server, backend="gemini", *overrides):
    url = server.url if backend == "gemini" else server.url + "/v1"
    return tiny_config(
        f"vlm.backend={backend}", f"vlm.{backend}.base_url={url}", *FAST_HTTP, *overrides
    )


def request(frozen_with=None, n=4):
    if frozen_with is None:
        return ProposalRequest(TASK, IMAGE, ("reset to home", TASK), False, n)
    return ProposalRequest(TASK, IMAGE, ("reset to home", *frozen_with), True, n)


def query(cfg, req):
    import asyncio

    return asyncio.run(ask(make_proposer(cfg), req))


@pytest.mark.parametrize(("api_version", "route"), [(None, "v1"), ("v1beta", "v1beta")])
def test_gemini_answer_carries_image_instruction_and_schema(api_version, route):
    extra = [f"vlm.gemini.api_version={api_version}"] if api_version else []
    with FakeVLMServer(scripted(FakeReply.json(OPEN))) as server:
        answer = query(remote_config(server, "gemini", *extra), request())
    assert answer.prompts == tuple(OPEN["prompts"])
    assert (answer.tokens_in, answer.tokens_out) == (300, 40)
    (call,) = server.calls
    assert (call.route, call.version, call.model) == ("gemini", route, "gemini-3-flash-preview")
    assert call.api_key == KEY
    assert len(call.images) == 1 and np.array_equal(call.images[0], IMAGE)
    assert "How it fails" in call.system and TASK in call.text
    assert call.config["responseMimeType"] == "application/json"
    assert "prompts" in call.config["responseJsonSchema"]["properties"]


def test_gemini_retries_429_then_answers():
    with FakeVLMServer(scripted(FakeReply.error(429), FakeReply.json(OPEN))) as server:
        answer = query(remote_config(server), request())
    assert len(server.calls) == 2 and answer.prompts == tuple(OPEN["prompts"])


@pytest.mark.parametrize(
    ("overrides", "kind", "calls"),
    [
        ((), "timeout", 3),  # every attempt times out: retried, then reported
        (("vlm.attempts=10", "vlm.deadline=0.5"), "deadline", None),  # the overall cut
    ],
)
def test_gemini_timeouts_end_with_a_reported_kind(overrides, kind, calls):
    with FakeVLMServer(scripted(FakeReply(text="{}", delay=3.0))) as server:
        start = time.perf_counter()
        with pytest.raises(ProposalError) as err:
            query(remote_config(server, "gemini", *overrides), request())
        elapsed = time.perf_counter() - start
    assert err.value.kind == kind
    assert elapsed < 2.5  # never waits for the slow server
    assert server.url in str(err.value)  # the endpoint, named
    if calls is not None:
        assert len(server.calls) == calls
        assert "vlm.timeout=0.4s, 3 of vlm.attempts=3 tried" in str(err.value)


@pytest.mark.parametrize("backend", ["gemini", "openai"])
def test_a_lost_connection_names_the_endpoint_and_the_attempts(backend):
    (port,) = free_ports(1)  # nobody listens
    url = f"http://127.0.0.1:{port}" + ("/v1" if backend == "openai" else "")
    cfg = tiny_config(f"vlm.backend={backend}", f"vlm.{backend}.base_url={url}", *FAST_HTTP)
    with pytest.raises(ProposalError) as err:
        query(cfg, request())
    assert err.value.kind == "connection"
    assert f"127.0.0.1:{port}" in str(err.value) and "of vlm.attempts=3 tried" in str(err.value)


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (FakeReply(text='{"prompts": ["a", '), "malformed"),
        (FakeReply(text='{"candidates": ["a"]}'), "malformed"),
        (FakeReply(text=None, finish_reason="SAFETY"), "safety"),
        (FakeReply.error(400), "http_400"),
    ],
)
def test_gemini_unusable_answers_are_errors_of_a_kind(reply, kind):
    with FakeVLMServer(scripted(reply)) as server, pytest.raises(ProposalError) as err:
        query(remote_config(server), request())
    assert err.value.kind == kind
    assert len(server.calls) == 1  # not retried: another attempt would answer the same


def test_frozen_cache_answers_are_repaired_or_rejected():
    cached = ("close the microwave", "pick up the black bowl", "open the top drawer")
    choices = [
        {"index": 2, "prompt": "pick up the black bowl"},  # right
        {"index": 1, "prompt": "Open the top drawer."},  # wrong index, cached text: repaired
        {"index": 9, "prompt": "fly to the moon"},  # unknown: rejected
        {"index": 3, "prompt": "put the bowl on the stove"},  # index says one thing, text another
        {"index": 0, "prompt": "reset to home"},  # not offered: rejected
    ]
    with FakeVLMServer(scripted(FakeReply.json({"choices": choices}))) as server:
        answer = query(remote_config(server), request(frozen_with=cached))
    assert answer.prompts == ("pick up the black bowl", "open the top drawer")
    assert (answer.repaired, answer.rejected) == (1, 3)
    call = server.calls[0]
    assert "1: close the microwave" in call.text and "0: reset to home" not in call.text
    assert "choices" in call.config["responseJsonSchema"]["properties"]


def test_openai_compatible_backend_through_the_openai_client():
    replies = scripted(
        FakeReply.error(503), FakeReply.json(OPEN), FakeReply(finish_reason="SAFETY")
    )
    with FakeVLMServer(replies) as server:
        cfg = remote_config(server, "openai", "vlm.openai.model=qwen-vl")
        proposer = make_proposer(cfg)
        import asyncio

        async def twice():
            first = await ask(proposer, request())
            with pytest.raises(ProposalError) as err:
                await ask(proposer, request())
            return first, err.value

        answer, error = asyncio.run(twice())
    assert answer.prompts == tuple(OPEN["prompts"]) and error.kind == "safety"
    assert len(server.calls) == 3  # 503 retried once, then the answer, then the withheld one
    call = server.calls[1]
    assert (call.route, call.model, call.api_key) == ("openai", "qwen-vl", "no-key")
    assert np.array_equal(call.images[0], IMAGE)
    assert call.config["response_format"]["json_schema"]["strict"] is True


def test_a_missing_key_is_a_clear_config_error(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(ConfigError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
        make_proposer(tiny_config("vlm.backend=gemini"))
    with pytest.raises(ConfigError, match=r"vlm\.openai\.api_key_env"):
        make_proposer(tiny_config("vlm.backend=openai", "vlm.openai.api_key_env=NO_SUCH_VAR"))


@pytest.mark.parametrize(
    ("override", "field"),
    [
        (("vlm.timeout=10", "vlm.deadline=5"), "vlm.deadline"),
        (("vlm.concurrency=0",), "vlm.concurrency"),
        (("vlm.gemini.temperature=3",), "vlm.gemini.temperature"),
        (("vlm.backend=claude",), "vlm.backend"),
    ],
)
def test_config_rejects_bad_vlm_values_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        tiny_config(*override)


LIBERO_TEMPLATE = ("env.kind=libero", "vlm.backend=template")


def test_template_proposer_draws_on_the_libero_scene():
    proposer = make_proposer(tiny_config(*LIBERO_TEMPLATE, "env.task=0"))
    task = "put both the alphabet soup and the tomato sauce in the basket"
    steps = [
        "pick up the alphabet soup and put it in the basket",
        "pick up the tomato sauce and put it in the basket",
    ]
    seen = set()
    for value in range(12):
        image = np.full((16, 16, 3), value, np.uint8)
        req = ProposalRequest(task, image, ("reset to home", task), False, 4)
        candidates = proposer.propose(req)
        assert candidates[:2] == steps and len(set(candidates)) == 4
        assert proposer.propose(req) == candidates  # seeded by the scene
        seen.update(candidates[2:])
    distractors = ("ketchup", "milk", "butter", "orange juice", "cream cheese")
    assert any(d in c for c in seen for d in distractors)  # scene objects, not in the task
    frozen = ProposalRequest(task, image, ("reset to home", task, steps[1]), True, 4)
    assert proposer.propose(frozen) == [steps[1], task]


def test_template_proposer_restates_an_atomic_sentence_in_the_scenes_names():
    # LIBERO-10 task 5 says "the book"; its scene (and the VLA's training) says "black book".
    proposer = make_proposer(tiny_config(*LIBERO_TEMPLATE, "env.task=5"))
    task = "pick up the book and place it in the back compartment of the caddy"
    grounded = "pick up the black book and put it in the back compartment of the caddy"
    for value in range(8):
        req = ProposalRequest(task, np.full((8, 8, 3), value, np.uint8), (), False, 4)
        assert proposer.propose(req)[:2] == [task, grounded]
    image = np.zeros((8, 8, 3), np.uint8)
    after_one = ProposalRequest(task, image, (), False, 4, (HistoryItem(task, image),))
    assert proposer.propose(after_one)[:2] == [grounded, task]  # VLM-only: the next one first


def test_template_proposer_offers_scene_commands_the_sentence_lacks():
    proposer = make_proposer(tiny_config(*LIBERO_TEMPLATE, "env.task=8"))
    task = "put both moka pots on the stove"
    pool = set()
    for value in range(8):
        req = ProposalRequest(task, np.full((8, 8, 3), value, np.uint8), (), False, 4)
        pool.update(proposer.propose(req))
    assert {"turn on the stove", "turn off the stove"} <= pool  # the scene's, not the sentence's
    assert set(ORACLE_PROMPTS[task]) <= pool  # "both moka pots": the left one, the right one


def test_sarl_propose_prints_candidates_as_json(tmp_path):
    image = tmp_path / "scene.png"
    Image.fromarray(IMAGE).save(image)
    cache = tmp_path / "prompt_cache.json"
    cache.write_text(json.dumps({"capacity": 3, "texts": ["reset to home", TASK, "close it"]}))
    choices = {"choices": [{"index": 2, "prompt": "close it"}]}
    with FakeVLMServer(scripted(FakeReply.json(choices))) as server:
        args = ["propose", "--task", TASK, "--image", str(image), "--base-url", server.url]
        proc = run_sarl(*args, "--cache", str(cache), env={**os.environ, "GEMINI_API_KEY": KEY})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["candidates"] == [{"id": 2, "prompt": "close it"}] and out["frozen_cache"]
    assert out["tokens_in"] == 300
    assert KEY not in proc.stdout + proc.stderr
    with FakeVLMServer(scripted(FakeReply.json(OPEN))) as server:  # no --cache: a run's first
        args = ["propose", "--task", TASK, "--image", str(image), "--base-url", server.url]
        proc = run_sarl(*args, env={**os.environ, "GEMINI_API_KEY": KEY})
    fresh = json.loads(proc.stdout)["candidates"]
    assert fresh == [{"id": i + 2, "prompt": p} for i, p in enumerate(OPEN["prompts"])]
    no_key = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    proc = run_sarl("propose", "--task", TASK, "--image", str(image), env=no_key)
    assert proc.returncode == 2 and "GEMINI_API_KEY" in proc.stderr
    libero = ["--set", "env.kind=libero", "--set", "env.task=3"]
    proc = run_sarl(
        "propose",
        "--backend",
        "template",
        "--task",
        TASK,
        "--image",
        str(image),
        *libero,
        env=no_key,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = [c["prompt"] for c in json.loads(proc.stdout)["candidates"][:2]]
    assert steps == [
        "put the black bowl in the bottom drawer of the cabinet",
        "close the bottom drawer of the cabinet",
    ]


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (FakeReply.error(401), "refused a test query (http_401"),
        (FakeReply.error(400), "refused a test query (http_400"),
        (FakeReply.error(404), "refused a test query (http_404"),
        (FakeReply(text="{}", delay=3.0), "did not answer a test query (timeout"),
    ],
)
def test_sarl_train_asks_the_vlm_once_before_it_starts(tmp_path, reply, said):
    out = tmp_path / "run"
    with FakeVLMServer(scripted(reply)) as server:
        sets = ["vlm.backend=gemini", f"vlm.gemini.base_url={server.url}", *FAST_HTTP]
        args = [a for s in sets for a in ("--set", s)]
        proc = run_sarl("train", "configs/skill_chain.yaml", "--out", str(out), *args,
                        env={**os.environ, "GEMINI_API_KEY": KEY})  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: vlm.backend=gemini") and said in line and server.url in line
    assert KEY not in proc.stderr and not out.exists()  # nothing started
