"""The VLMService actor: one per run, the only owner of the prompt cache.

Every worker asks it for candidates, so a prompt's id is assigned once, here, and means
the same text on every worker. It never lets a proposer failure stop a run: a failed
or empty answer falls back to what the cache already holds (counted as a fallback).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from sarl_dist.config import Config
from sarl_dist.core.prompt_cache import RESET_ID, PromptCache
from sarl_dist.vlm import make_proposer
from sarl_dist.vlm.base import HistoryItem, ProposalRequest

log = logging.getLogger(__name__)


def new_cache(cfg: Config, task: str) -> PromptCache:
    seeds = ([task] if cfg.cache.seed_task_prompt else []) + list(cfg.cache.seed_prompts)
    return PromptCache(cfg.cache.capacity, seeds)


class VLMService:
    def __init__(self, cfg: Config, task: str, cache_state: dict | None = None) -> None:
        self.cfg, self.task = cfg, task
        self.cache = PromptCache.from_state(cache_state) if cache_state else new_cache(cfg, task)
        if self.cache.capacity != cfg.cache.capacity:
            raise ValueError(
                f"cache.capacity={cfg.cache.capacity} but the saved cache has {self.cache.capacity}"
            )
        self.proposer = make_proposer(cfg)
        self.meters = {"calls": 0, "fallbacks": 0, "rejected": 0, "errors": 0, "seconds": 0.0}

    def propose(
        self, image: np.ndarray, history: tuple[HistoryItem, ...] = ()
    ) -> tuple[list[int], list[str]]:
        """Candidate ids A(s) for this scene, with their texts."""
        request = ProposalRequest(
            task=self.task,
            image=image,
            cached_prompts=tuple(self.cache.texts),
            frozen=self.cache.frozen,
            n=self.cfg.vlm.candidates,
            history=history,
        )
        start = time.perf_counter()
        self.meters["calls"] += 1
        try:
            answers = self.proposer.propose(request)
        except Exception as exc:  # a proposer failure must not end the run
            log.warning(
                "proposer failed (%s: %s); falling back to the cache", type(exc).__name__, exc
            )
            self.meters["errors"] += 1
            answers = []
        self.meters["seconds"] += time.perf_counter() - start
        ids: list[int] = []
        for text in answers:
            try:
                pid = self.cache.add(text)
            except (TypeError, ValueError) as exc:
                log.warning("proposer answer rejected: %s", exc)
                pid = None
            if pid is None:
                self.meters["rejected"] += 1
            elif pid not in ids and pid != RESET_ID:
                ids.append(pid)
        if not ids:
            self.meters["fallbacks"] += 1
            task_id = self.cache.lookup(self.task)
            ids = [task_id] if task_id is not None else []
        if self.cfg.cache.include_reset or not ids:
            ids.append(RESET_ID)
        return ids, [self.cache.text(i) for i in ids]

    def prompt_texts(self) -> list[str]:
        return self.cache.texts

    def cache_state(self) -> dict:
        return self.cache.state()

    def stats(self) -> dict:
        return {**self.meters, "cache_size": len(self.cache), "cache_frozen": self.cache.frozen}
