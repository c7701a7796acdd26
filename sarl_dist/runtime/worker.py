"""The EnvWorker actor: the rollout loop (core/rollout.py) on one environment, with its
VLA client and a local copy of the Q-ensemble, wrapped for Ray.

A worker runs whole episodes and returns them; it never writes to the replay buffer
itself. The driver commits a finished episode's transitions in one call, so a worker
that dies mid-episode leaves nothing behind and the episode is simply run again.
Anything that goes wrong inside an episode (the simulator, the VLA, the VLM) ends it with
an exception; the driver decides whether to replace the worker and re-run the episode.
Here are the parts the loop is built from on a worker: where A(s) comes from (the
VLMService, or a fixed plan) and Q(s, .) (the Learner's published weights).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import ray
import torch

from sarl_dist.config import Config
from sarl_dist.core.agent import build_q
from sarl_dist.core.interfaces import Observation
from sarl_dist.core.qnet import QEnsemble, load_numpy_weights
from sarl_dist.core.replay import Batch
from sarl_dist.core.rollout import Episode, Parts, run_episode
from sarl_dist.envs import atomic_prompts, make_env
from sarl_dist.methods import METHODS
from sarl_dist.report.video import Recorder
from sarl_dist.runtime import compute
from sarl_dist.runtime.faults import Faults
from sarl_dist.runtime.vlm_service import scene_key
from sarl_dist.vla import make_vla
from sarl_dist.vlm.base import HistoryItem

log = logging.getLogger(__name__)


class VLMCandidates:
    """A(s) from the run's VLMService. An answer the service stores for a request key never
    changes, so a scene this worker was answered before is answered again from its own
    copy, with no round trip: keyed as the service keys it, under the cache's view the
    service's last answer showed (a cache another worker froze since is seen at this
    worker's next miss: its hits meanwhile are ordered before the freeze). The hits are
    counted per episode (`local`) and reported to the service with it. With
    `refresh_steps` (a robot decides every step and refreshes its candidates every 20),
    A(s) is the last proposal until that many low-level steps have passed."""

    def __init__(self, vlm, refresh_steps: int | None) -> None:
        self.vlm, self.every = vlm, refresh_steps
        self._last: tuple[int, np.ndarray] | None = None  # (at low-level step, ids)
        self._view: str | None = None  # the service's cache view; None before its first answer
        self._answers: dict[tuple, tuple[np.ndarray, int]] = {}  # key -> (ids, rejected)
        self.local = {"hits": 0, "rejected": 0}  # this episode's, for the service's counts

    def reset(self) -> None:
        self._last = None
        self.local = {"hits": 0, "rejected": 0}

    def ask(self, obs: Observation, t: int, steps: int, history: tuple):
        if self._last is not None and self.every and steps - self._last[0] < self.every:
            return None
        shown = tuple(HistoryItem(text, scene) for text, scene in history)
        scene = scene_key(obs.scene, shown)
        if (self._view, *scene) in self._answers:
            return steps, scene, None
        return steps, scene, self.vlm.candidates.remote(obs.scene, shown)

    def collect(self, pending) -> tuple[np.ndarray, dict[int, str]]:
        if pending is None:
            return self._last[1], {}
        steps, scene, ref = pending
        texts = {}
        if ref is None:
            ids, rejected = self._answers[(self._view, *scene)]
            self.local["hits"] += 1
            self.local["rejected"] += rejected
        else:
            answer = compute.get(ref)
            ids = np.asarray(answer.ids, dtype=np.int64)
            texts = dict(zip(answer.ids, answer.texts, strict=True))
            if answer.stored is not None:
                self._answers[(answer.stored, *scene)] = (ids, answer.rejected)
            self._view = answer.view
        self._last = (steps, ids)
        return ids, texts


class PlanCandidates:
    """A fixed sequence's A(s): its next prompt (the last one repeated); no VLM."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def reset(self) -> None:
        pass

    def ask(self, obs: Observation, t: int, steps: int, history: tuple) -> int:
        return t

    def collect(self, t: int) -> tuple[np.ndarray, dict[int, str]]:
        return np.asarray([self.ids[min(t, len(self.ids) - 1)]], dtype=np.int64), {}


POLL_EVERY_S = 0.02
"""A worker polls the Learner for weights at most this often. The Learner publishes every
`learner.publish_every` gradient steps (each tens of milliseconds), so closer polls find
nothing new; one per decision made the Learner a serial point at ~15 skill-chain workers
(docs/performance.md). On LIBERO (a decision a second) every decision still polls."""


class LearnerWeights:
    """Q(s, .) from the newest weights the Learner has published. The poll for the next
    decision's weights is sent while the VLA acts (`prefetch`), so applying them usually
    costs no round trip; weights are fetched only when their object id changes. An
    episode's first decision polls afresh; later polls are at least POLL_EVERY_S apart, so
    a decision may use weights published up to that long before it (its staleness is as
    the last poll measured it)."""

    def __init__(self, learner, q: QEnsemble) -> None:
        self.learner, self.q = learner, q
        self.version, self.staleness = -1, 0
        self.polls = 0  # sent, for the episode's summary (one worker's demand on the Learner)
        self._held: str | None = None  # the object id of the weights loaded into q
        self._poll = None  # a poll sent during the last action, not yet read
        self._sent = -math.inf  # when the last poll was sent (time.monotonic)

    def _due(self) -> bool:
        return time.monotonic() - self._sent >= POLL_EVERY_S

    def _send(self) -> None:
        self._poll, self._sent = self.learner.poll.remote(self._held), time.monotonic()
        self.polls += 1

    def reset(self) -> None:  # an episode starts from the weights published by now
        self.polls, self._poll, self._sent = 0, None, -math.inf

    def prefetch(self) -> None:
        if self._due():
            self._send()

    def values(self, obs: Observation) -> np.ndarray:
        if self._poll is None and self._due():
            self._send()
        if self._poll is not None:
            version, published_updates, updates_now, fresh = compute.get(self._poll)
            self._poll = None
            if fresh is not None:
                try:
                    load_numpy_weights(self.q, compute.get(fresh[0]))
                    self.version, self._held = version, fresh[0].hex()
                except ray.exceptions.RayError as exc:  # the Learner died after publishing
                    log.warning("weights v%d are gone (%s); keeping mine", version, exc)
            self.staleness = updates_now - published_updates
        with torch.inference_mode():
            q = self.q(torch.from_numpy(obs.image[None]), torch.from_numpy(obs.proprio[None]))
        return q.mean(0)[0].numpy()


class EnvWorker:
    def __init__(
        self,
        cfg: Config,
        index: int,
        learner,
        vlm,
        prompt_texts: list[str],
        vla_servers: list[tuple[str, int]] | None = None,
    ) -> None:
        torch.set_num_threads(cfg.runtime.torch_threads)
        self.index = index
        self.env = make_env(cfg)
        self.vla = make_vla(cfg, cfg.seed * 1000 + index, self.env.spec.action_dim, vla_servers)
        method = METHODS[cfg.method](cfg)
        fixed = method.fixed_prompts(self.env.spec.task, lambda: atomic_prompts(cfg))
        texts = dict(enumerate(prompt_texts))
        if fixed is None:
            candidates = VLMCandidates(vlm, cfg.vlm.refresh_steps)
        else:  # its prompts get their ids as a proposal would
            ids, fixed_texts = compute.get(vlm.register.remote(list(fixed)))
            texts.update(zip(ids, fixed_texts, strict=True))
            candidates = PlanCandidates(ids)
        values = None
        if method.learns:
            values = LearnerWeights(learner, build_q(cfg.cache.capacity, cfg.q).eval())
        self.parts = Parts(
            self.env, self.vla, method, candidates, values, texts, cfg.cache.capacity
        )
        self.faults = Faults(cfg.faults, cfg.seed)
        self._episodes_run = 0
        self._where: dict | None = None  # the running episode's decision, for `live`

    def ready(self) -> int:
        return self.index

    def live(self) -> dict | None:
        """Where the running episode is (decision, steps, prompt); None between episodes.
        Answered while run_episode runs on a worker with two threads (the robot's)."""
        return self._where

    def _decision(self, t: int, where: dict | None) -> None:
        self._where = where
        if t == 1:  # midway through an episode: where injected faults strike
            self.faults.worker_mid_episode(self._episodes_run)

    @ray.method(num_returns=2)
    def run_episode(
        self, episode: int, seed: int, greedy: bool, video: str | None = None
    ) -> tuple[dict, Batch | None]:
        """One episode (core.rollout.run_episode); with `video`, also saved as
        `<video>-ok|fail.mp4`."""
        self._episodes_run += 1
        recorder = Recorder(self.env) if video else None
        summary, batch = run_episode(
            self.parts, Episode(episode, seed, greedy), recorder, self._decision
        )
        summary["worker"] = self.index
        if isinstance(self.parts.candidates, VLMCandidates):  # what the service did not see
            summary["vlm_local"] = self.parts.candidates.local
        if self.parts.values is not None:
            summary["weight_polls"] = self.parts.values.polls
        # The policy server that served the whole episode (None: the VLA is in process).
        summary["vla_server"] = getattr(self.vla.policy, "uri", None)
        summary["vla_timing"] = self.vla.server_timing()  # its queue wait, batches, compute
        if recorder is not None:
            path = Path(f"{video}-{'ok' if summary['success'] else 'fail'}.mp4")
            path.parent.mkdir(parents=True, exist_ok=True)
            recorder.save(path)
            summary["video"] = str(path)
        return summary, batch

    def close(self) -> None:
        self.env.close()
