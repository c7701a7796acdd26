"""Deliberate faults from the config's `faults` section, so every recovery path runs in CI
with real processes: a process that exits abruptly is a real dead process to Ray, and an
injected exception travels the same way a simulator's would. All are off by default.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import ray

from sarl_dist.config import FaultsConfig
from sarl_dist.vlm.base import ProposalError

log = logging.getLogger(__name__)


def restarted() -> bool:
    """Whether Ray restarted this actor's process after a death (False outside an actor)."""
    if not ray.is_initialized():  # asking the runtime context would start a local Ray
        return False
    context = ray.get_runtime_context()
    with warnings.catch_warnings():  # Ray's own property calls its deprecated actor_id
        warnings.simplefilter("ignore", DeprecationWarning)
        return context.get_actor_id() is not None and context.was_current_actor_reconstructed


class InjectedFaultError(RuntimeError):
    """An exception raised on purpose (faults.raise_in_worker_every)."""


def _die(what: str) -> None:
    log.warning("fault injection: %s exits now", what)
    os._exit(1)


def _due(every: int, count: int) -> bool:
    return every > 0 and count % every == 0


class Faults:
    def __init__(self, cfg: FaultsConfig, seed: int) -> None:
        self.cfg = cfg
        self._rng = np.random.default_rng([seed, 99])

    def worker_mid_episode(self, episodes_run: int) -> None:
        """Called once per episode, after its first decision (so it has transitions to lose)."""
        if _due(self.cfg.kill_worker_every, episodes_run):
            _die("the EnvWorker")
        if _due(self.cfg.raise_in_worker_every, episodes_run):
            raise InjectedFaultError(f"injected simulator failure in episode run {episodes_run}")

    def learner_groups(self, committed: int, episodes: list) -> list[list]:
        """A group of episodes to commit, split after the one the Learner is to die after,
        so it dies right after that episode is durable, whatever the group."""
        cut = self.cfg.kill_learner_at - committed
        groups = [episodes[:cut], episodes[cut:]] if 0 < cut < len(episodes) else [episodes]
        return [group for group in groups if group]

    def learner_committed(self, committed: int) -> None:
        if committed == self.cfg.kill_learner_at:
            _die("the Learner")

    def vlm_cache_grew(self, before: int, after: int) -> None:
        """Called once the grown cache is saved: a restart must find every id it handed out."""
        if before < self.cfg.kill_vlm_at_prompt <= after:
            _die("the VLMService")

    def vlm_backend_call(self) -> None:
        if self.cfg.vlm_failure_rate and self._rng.random() < self.cfg.vlm_failure_rate:
            raise ProposalError("injected", "faults.vlm_failure_rate")
