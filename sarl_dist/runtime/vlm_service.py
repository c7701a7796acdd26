"""The VLMService actor: one per run, the only owner of the prompt cache.

Every worker asks it for candidates, so a prompt's id is assigned once, here, and means
the same text on every worker. It is an asyncio actor, so many queries are in flight at
once:

- a request whose answer is cached (in memory, and in the run's answer store on disk)
  costs nothing; the key is (task, image digest, the cache state the request shows,
  n, history, backend identity);
- a request identical to one in flight waits for that one (merged);
- remote requests arriving within `vlm.batch_window` are released together and sent
  concurrently, at most `vlm.concurrency` at a time; offline proposers answer at once.

A transient proposer failure never stops a run: a query that fails after its retries,
times out, or returns a malformed or safety-blocked answer is logged with its reason,
counted by kind, and answered from the prompt cache (counted as a fallback). Failures are
not cached, so the next query for that scene asks again. A refusal (HTTP 400/401/403/404:
a bad key, an unknown model) is not transient: after `vlm.max_refusals` in a row, every
query raises VLMUnusableError, and the driver stops the run, checkpointed, saying why.

An answer stored for a request key never changes, so a worker keeps its own copy of the
answers it was given and answers a scene it has seen itself (`candidates`, worker.py's
VLMCandidates): the service stays the one owner of ids, of the switch to a frozen cache
(each answer tells the worker the cache's view for its next keys) and of the counts (the
driver reports the workers' own hits with their episodes: `count_local`).

Given a `cache_file`, the cache is durable: it is written (atomically) whenever it grows,
before any new id is handed out, and a (re)started service continues from that file.
Ray restarts a dead VLMService with its original arguments, so without the file a restart
would hand the same ids to other prompts; with it, an id never changes meaning in a run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarl_dist.config import Config
from sarl_dist.core.prompt_cache import RESET_ID, PromptCache
from sarl_dist.jsonl import append_jsonl, read_jsonl
from sarl_dist.runtime.checkpoint import write_atomic
from sarl_dist.runtime.faults import Faults, restarted
from sarl_dist.runtime.metrics import RunMetrics
from sarl_dist.vlm import REMOTE, ask, identity, make_proposer
from sarl_dist.vlm.base import (
    REFUSALS,
    HistoryItem,
    ProposalError,
    ProposalRequest,
    VLMUnusableError,
    image_digest,
)

log = logging.getLogger(__name__)
LATENCY_WINDOW = 10_000  # latency percentiles are over the most recent backend calls


def new_cache(cfg: Config, task: str) -> PromptCache:
    seeds = ([task] if cfg.cache.seed_task_prompt else []) + list(cfg.cache.seed_prompts)
    return PromptCache(cfg.cache.capacity, seeds)


def cache_view(cached_prompts: tuple[str, ...] | list[str], frozen: bool) -> str:
    """The prompt cache as a request shows it. An open cache is not shown to the VLM, so
    it is not part of the key; a frozen one is listed in the request, so its contents are."""
    shown = "\n".join(cached_prompts) if frozen else "open"
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


def scene_key(image: np.ndarray, history: tuple[HistoryItem, ...]) -> tuple:
    """The part of a request's key that its scene (and history) gives."""
    return image_digest(image), tuple((h.prompt, image_digest(h.image)) for h in history)


def response_key(request: ProposalRequest, backend: str) -> str:
    """What an answer depends on. The task, n and backend are the run's; a worker's own
    copy keys answers by the rest (cache_view, scene_key)."""
    image, history = scene_key(request.image, request.history)
    payload = {
        "task": request.task,
        "image": image,
        "cache": cache_view(request.cached_prompts, request.frozen),
        "n": request.n,
        "history": history,
        "backend": backend,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Candidates:
    """A(s) as a worker keeps it. `stored`: the cache view under which the service keeps
    this answer (None for a fallback: the next request asks again); `view`: the cache's
    view once the answer is admitted (a worker's next keys); `rejected`: the answer's texts
    the cache refused, refused again (and counted) on every hit."""

    ids: list[int]
    texts: list[str]
    stored: str | None
    view: str
    rejected: int


def load_responses(path: Path) -> list[dict]:
    """The answer store's entries; a line torn by a crash is skipped."""
    return read_jsonl(path, torn_ok=True)


def append_responses(path: Path, entries: list[dict]) -> None:
    append_jsonl(path, entries, durable=True)


class VLMService:
    def __init__(
        self,
        cfg: Config,
        task: str,
        cache_state: dict | None = None,
        responses: list[dict] | None = None,
        cache_file: str | None = None,
        run_name: str = "local",
    ) -> None:
        self.cfg, self.task = cfg, task
        self.metrics = RunMetrics(run_name)
        self.faults = Faults(cfg.faults, cfg.seed)
        self.cache_file = Path(cache_file) if cache_file else None
        self.cache = PromptCache.from_state(cache_state) if cache_state else new_cache(cfg, task)
        if self.cache_file is not None and self.cache_file.exists():
            live = PromptCache.load(self.cache_file)
            if live.texts[: len(self.cache)] != self.cache.texts:
                raise ValueError(
                    f"{self.cache_file} does not extend the checkpoint's prompt cache: "
                    "prompt ids would change meaning"
                )
            self.cache = live
        if self.cache.capacity != cfg.cache.capacity:
            raise ValueError(
                f"cache.capacity={cfg.cache.capacity} but the saved cache has {self.cache.capacity}"
            )
        self._save_cache()
        self.proposer = make_proposer(cfg)
        self.remote = cfg.vlm.backend in REMOTE
        self.backend = json.dumps(identity(cfg), sort_keys=True)
        self.window = cfg.vlm.batch_window if self.remote else 0.0
        self._answers = {e["key"]: tuple(e["prompts"]) for e in responses or ()}
        self._fresh: list[dict] = []
        self._inflight: dict[str, asyncio.Future] = {}
        self._slots = asyncio.Semaphore(cfg.vlm.concurrency)
        self._gate: asyncio.Future | None = None
        self.meters = Counter()
        self.errors: Counter[str] = Counter()
        self._latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._refusals = 0  # in a row
        self.refused: str | None = None  # set once the VLM has refused too often: sticky

    async def propose(
        self, image: np.ndarray, history: tuple[HistoryItem, ...] = ()
    ) -> tuple[list[int], list[str]]:
        """Candidate ids A(s) for this scene, with their texts."""
        answer = await self.candidates(image, history)
        return answer.ids, answer.texts

    async def candidates(
        self, image: np.ndarray, history: tuple[HistoryItem, ...] = ()
    ) -> Candidates:
        """A(s) for this scene, with what a worker needs to answer it again itself."""
        if self.refused is not None:
            raise VLMUnusableError(self.refused)
        request = ProposalRequest(
            task=self.task,
            image=image,
            cached_prompts=tuple(self.cache.texts),
            frozen=self.cache.frozen,
            n=self.cfg.vlm.candidates,
            history=history,
        )
        self.meters["requests"] += 1
        key = response_key(request, self.backend)
        prompts = self._answers.get(key)
        if prompts is not None:
            self.meters["cache_hits"] += 1
            self.metrics.vlm_cache_hits.inc()
        else:
            query = self._inflight.get(key)
            if query is None:
                query = asyncio.ensure_future(self._query(key, request))
                self._inflight[key] = query
                query.add_done_callback(lambda _: self._inflight.pop(key, None))
            else:
                self.meters["merged"] += 1
            prompts = await asyncio.shield(query)
        if self.refused is not None:
            raise VLMUnusableError(self.refused)
        return self._ids(request, prompts)

    async def _join_batch(self) -> None:
        """Wait for the current batch to be released (the first request opens one)."""
        if self._gate is None or self._gate.done():
            loop = asyncio.get_running_loop()
            self._gate = loop.create_future()
            loop.call_later(self.window, self._gate.set_result, None)
            self.meters["batches"] += 1
        await asyncio.shield(self._gate)

    async def _query(self, key: str, request: ProposalRequest) -> tuple[str, ...]:
        """The backend's answer, or () when it failed (then the caller falls back)."""
        if self.window > 0:
            await self._join_batch()
        async with self._slots:
            self.meters["calls"] += 1
            self.metrics.vlm_calls.inc()
            start = time.perf_counter()
            try:
                self.faults.vlm_backend_call()
                answer = await ask(self.proposer, request)
            except ProposalError as exc:
                self._failed(exc.kind, exc, exc.tokens)
                if exc.kind in REFUSALS:
                    self._refusals += 1
                    if self._refusals >= self.cfg.vlm.max_refusals and self.refused is None:
                        self.refused = (
                            f"the VLM refused {self._refusals} queries in a row (vlm.max_refusals"
                            f"={self.cfg.vlm.max_refusals}); last: {exc}. Check the API key and "
                            f"vlm.{self.cfg.vlm.backend}.model"
                        )
                return ()
            except Exception as exc:  # an offline proposer's bug must not end the run
                self._failed("other", exc)
                return ()
            finally:
                self._latency.append(time.perf_counter() - start)
        self._refusals = 0
        self.meters["tokens_in"] += answer.tokens_in
        self.meters["tokens_out"] += answer.tokens_out
        self.meters["repaired"] += answer.repaired
        self.meters["rejected"] += answer.rejected
        if answer.prompts:
            self._answers[key] = answer.prompts
            self._fresh.append({"key": key, "prompts": list(answer.prompts)})
        return answer.prompts

    def _failed(self, kind: str, exc: Exception, tokens: tuple[int, int] = (0, 0)) -> None:
        self.errors[kind] += 1
        self.meters["tokens_in"] += tokens[0]
        self.meters["tokens_out"] += tokens[1]
        log.warning("VLM query failed (%s); candidates come from the prompt cache", exc)

    def _ids(self, request: ProposalRequest, prompts: tuple[str, ...]) -> Candidates:
        stored = cache_view(request.cached_prompts, request.frozen) if prompts else None
        if not prompts:
            self.meters["fallbacks"] += 1
            self.metrics.vlm_fallbacks.inc()
            cached = request.cached_prompts[RESET_ID + 1 :]
            order = request.scene_rng(self.cfg.seed).permutation(len(cached))
            prompts = tuple(cached[i] for i in order[: request.n])
        before = len(self.cache)
        admitted, refused = self.cache.admit(prompts)
        for reason in refused:
            log.warning("proposer answer rejected: %s", reason)
        self.meters["rejected"] += len(refused)
        ids = [pid for pid in admitted if pid != RESET_ID]
        if self.cfg.cache.include_reset or not ids:
            ids.append(RESET_ID)
        if len(self.cache) > before:
            self._save_cache()
            self.faults.vlm_cache_grew(before, len(self.cache))
        view = cache_view(self.cache.texts, self.cache.frozen)
        return Candidates(ids, [self.cache.text(i) for i in ids], stored, view, len(refused))

    def count_local(self, hits: int, rejected: int) -> None:
        """Requests workers answered from their own copies (reported with their episodes),
        counted as this service counts its own hits."""
        self.meters.update(requests=hits, cache_hits=hits, worker_hits=hits, rejected=rejected)
        if hits:
            self.metrics.vlm_cache_hits.inc(hits)

    def register(self, texts: list[str]) -> tuple[list[int], list[str]]:
        """Ids for prompts a baseline fixes in advance (zero_shot, oracle), entered in the
        cache like a proposal; a full cache that lacks one is a configuration error."""
        before = len(self.cache)
        ids = [self.cache.add(text) for text in texts]
        missing = [t for t, i in zip(texts, ids, strict=True) if i is None]
        if missing:
            raise ValueError(f"the prompt cache is full and lacks {missing}; raise cache.capacity")
        if len(self.cache) > before:
            self._save_cache()
        return ids, [self.cache.text(i) for i in ids]

    def _save_cache(self) -> None:
        if self.cache_file is not None:
            write_atomic(self.cache_file, json.dumps(self.cache.state(), indent=1).encode())

    def prompt_texts(self) -> list[str]:
        return self.cache.texts

    def cache_state(self) -> dict:
        return self.cache.state()

    def drain_responses(self) -> list[dict]:
        """Answers not yet handed out for saving (the driver appends them to the store)."""
        fresh, self._fresh = self._fresh, []
        return fresh

    def stats(self) -> dict:
        latency = np.asarray(self._latency or [float("nan")]) * 1e3
        section = getattr(self.cfg.vlm, self.cfg.vlm.backend, None)
        cost = 0.0
        if section is not None:
            cost = (
                self.meters["tokens_in"] * section.usd_per_mtok_in
                + self.meters["tokens_out"] * section.usd_per_mtok_out
            ) / 1e6
        counts = (
            "requests",
            "calls",
            "cache_hits",
            "worker_hits",
            "merged",
            "fallbacks",
            "rejected",
        )
        return {
            "backend": self.cfg.vlm.backend,
            **{k: self.meters[k] for k in counts},
            "repaired": self.meters["repaired"],
            "errors": dict(self.errors),
            # remote backends: every HTTP attempt by status (or timeout, connection), and the
            # attempts beyond each query's first
            "http_attempts": dict(getattr(self.proposer, "http_attempts", {})),
            "http_retries": getattr(self.proposer, "http_retries", 0),
            "refused": self.refused,
            "tokens_in": self.meters["tokens_in"],
            "tokens_out": self.meters["tokens_out"],
            "cost_usd": cost,
            "latency_ms_p50": float(np.percentile(latency, 50)),
            "latency_ms_p95": float(np.percentile(latency, 95)),
            "batches": self.meters["batches"],
            "cache_size": len(self.cache),
            "cache_frozen": self.cache.frozen,
            "restarted": restarted(),
        }
