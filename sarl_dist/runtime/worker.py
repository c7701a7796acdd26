"""The EnvWorker actor: one environment, one VLA client, a local copy of the Q-ensemble.

A worker runs whole episodes and returns them; it never writes to the replay buffer
itself. The driver commits a finished episode's transitions in one call, so a worker
that dies mid-episode leaves nothing behind and the episode is simply run again.
Anything that goes wrong inside an episode (the simulator, the VLA, the VLM) ends it with
an exception; the driver decides whether to replace the worker and re-run the episode.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
import torch

from sarl_dist.config import Config
from sarl_dist.core.agent import build_q
from sarl_dist.core.policy import greedy_choice, softmax_choice, uniform_choice
from sarl_dist.core.prompt_cache import RESET_ID
from sarl_dist.core.qnet import load_numpy_weights
from sarl_dist.core.replay import Batch
from sarl_dist.envs import make_env, oracle_prompts
from sarl_dist.envs.base import Observation
from sarl_dist.report.video import Recorder
from sarl_dist.runtime.faults import Faults
from sarl_dist.vla import make_vla
from sarl_dist.vlm.base import HistoryItem

log = logging.getLogger(__name__)
MOVED = 0.002  # m: an end effector displaced less than this in a decision did not move


@dataclass
class _Trace:
    """What one episode records, decision by decision."""

    transitions: list[tuple] = field(default_factory=list)
    prompts: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    staleness: list[int] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)

    def add(
        self, obs: Observation, nxt: Observation, prompt: int, reward: float, done: float, mask
    ):
        self.prompts.append(prompt)
        self.rewards.append(reward)
        self.transitions.append(
            (obs.image, obs.proprio, prompt, reward, done, nxt.image, nxt.proprio, mask)
        )

    def batch(self) -> Batch:
        columns = [np.stack(c) for c in zip(*self.transitions, strict=True)]
        return Batch(*columns)


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
        self.cfg, self.index, self.learner, self.vlm = cfg, index, learner, vlm
        self.env = make_env(cfg)
        self.vla = make_vla(cfg, cfg.seed * 1000 + index, self.env.spec.action_dim, vla_servers)
        self.num_prompts = cfg.cache.capacity
        self.texts = dict(enumerate(prompt_texts))
        self.q = build_q(self.num_prompts, cfg.q).eval() if cfg.learns else None
        self.plan = self._plan()
        self.version = -1
        self._weights_id: str | None = None  # the object id of the weights loaded into self.q
        self._staleness = 0
        self._poll = None  # a weights poll sent during the last action, not yet read
        self._proposal: tuple[int, np.ndarray] | None = None  # (at low-level step, ids)
        self.faults = Faults(cfg.faults, cfg.seed)
        self._episodes_run = 0
        self._where: dict | None = None  # the running episode's decision, for `live`

    def ready(self) -> int:
        return self.index

    def live(self) -> dict | None:
        """Where the running episode is (decision, steps, prompt); None between episodes.
        Answered while run_episode runs on a worker with two threads (the robot's)."""
        return self._where

    def _plan(self) -> list[int] | None:
        """The prompt ids a fixed-sequence baseline issues, decision by decision."""
        if self.cfg.method not in ("zero_shot", "oracle"):
            return None
        fixed = [self.env.spec.task] if self.cfg.method == "zero_shot" else oracle_prompts(self.cfg)
        ids, texts = ray.get(self.vlm.register.remote(list(fixed)))
        self.texts.update(zip(ids, texts, strict=True))
        return ids

    def _prefetch_weights(self) -> None:
        """Ask the Learner for newer weights now (while the VLA acts), to apply at the next
        decision without waiting for the round trip."""
        if self.q is not None:
            self._poll = self.learner.poll.remote(self._weights_id)

    def _refresh_weights(self) -> None:
        poll = self._poll or self.learner.poll.remote(self._weights_id)
        self._poll = None
        version, published_updates, updates_now, fresh = ray.get(poll)
        if fresh is not None:
            try:
                load_numpy_weights(self.q, ray.get(fresh[0]))
                self.version, self._weights_id = version, fresh[0].hex()
            except ray.exceptions.RayError as exc:  # the Learner died after publishing
                log.warning("weights v%d are gone (%s); keeping mine", version, exc)
        self._staleness = updates_now - published_updates

    def _prepare(
        self, obs: Observation, t: int, steps: int, history: tuple[HistoryItem, ...] = ()
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Before decision t (`steps` low-level steps into the episode): A(s) and Q(s, .).

        The VLM query goes out first; meanwhile the newest weights are applied (their poll
        was sent while the VLA acted, so it is usually answered already) and the Q forward
        runs, hidden behind the VLM's round trip. A fixed-sequence baseline needs no VLM:
        its candidate is its plan's next prompt (the last one repeated). The VLM-only
        baseline's query carries the episode's history. With `vlm.refresh_steps` (the real
        robot decides every step, refreshes candidates every 20), A(s) is the last
        proposal until that many low-level steps have passed."""
        if self.plan is not None:
            return np.asarray([self.plan[min(t, len(self.plan) - 1)]], dtype=np.int64), None
        every = self.cfg.vlm.refresh_steps
        if self._proposal is not None and every and steps - self._proposal[0] < every:
            proposal = None
        else:
            proposal = self.vlm.propose.remote(obs.scene, history)
        q_values = None
        if self.q is not None:
            self._refresh_weights()
            with torch.inference_mode():
                q = self.q(torch.from_numpy(obs.image[None]), torch.from_numpy(obs.proprio[None]))
            q_values = q.mean(0)[0].numpy()
        if proposal is not None:
            ids, texts = ray.get(proposal)
            self.texts.update(zip(ids, texts, strict=True))
            self._proposal = (steps, np.asarray(ids, dtype=np.int64))
        return self._proposal[1], q_values

    def _choose(self, q: np.ndarray | None, candidates: np.ndarray, greedy: bool, rng) -> int:
        if self.cfg.method in ("zero_shot", "oracle", "vlm_only"):
            return int(candidates[0])  # the plan's prompt, or the VLM's own first choice
        if q is None:
            return uniform_choice(candidates, rng)
        if greedy:
            return greedy_choice(q, candidates)
        return softmax_choice(q, candidates, self.cfg.learner.temperature, rng)

    def _mask(self, candidates: np.ndarray) -> np.ndarray:
        mask = np.zeros(self.num_prompts, dtype=bool)
        mask[candidates] = True
        return mask

    @ray.method(num_returns=2)
    def run_episode(
        self, episode: int, seed: int, greedy: bool, video: str | None = None
    ) -> tuple[dict, Batch | None]:
        """One episode: its summary and its transitions (None when greedy: eval stores nothing).

        Evaluation episode j (numbered -1 - j) starts from the benchmark's j-th fixed init
        state; with `video`, the episode is also saved as `<video>-ok|fail.mp4`."""
        start = time.monotonic()
        rng = np.random.default_rng([seed, 1])
        self._episodes_run += 1
        env, spec, trace = self.env, self.env.spec, _Trace()
        env.reset(seed, init_index=-1 - episode if episode < 0 else None)
        self._poll = None  # an episode starts from the weights published by now
        self._proposal = None
        recorder = Recorder(env) if video else contextlib.nullcontext()
        obs = env.observe()
        history: list[HistoryItem] = []  # what the VLM-only baseline is shown
        candidates, q_values = self._prepare(obs, 0, 0)
        env_seconds = vla_seconds = 0.0
        steps, success, moved, ended_by = 0, False, False, "max_decisions"
        with recorder:
            for t in range(spec.max_decisions):
                t0 = time.perf_counter()
                prompt = self._choose(q_values, candidates, greedy, rng)
                if video:
                    recorder.prompt = self.texts[prompt]
                self._where = {
                    "decision": t,
                    "decisions": spec.max_decisions,
                    "steps": steps,
                    "prompt": self.texts[prompt],
                }
                trace.versions.append(self.version)
                trace.staleness.append(self._staleness)
                self._prefetch_weights()
                if prompt == RESET_ID:
                    result = env.run_reset()
                else:
                    result = env.run_prompt(self.texts[prompt], self.vla)
                t1 = time.perf_counter()
                next_obs = env.observe()
                observe_seconds = time.perf_counter() - t1
                success = result.success
                moved = moved or bool(np.abs(next_obs.proprio[:3] - obs.proprio[:3]).max() > MOVED)
                steps += result.steps
                last = success or result.truncated or t == spec.max_decisions - 1
                terminal = success or (last and not self.cfg.learner.bootstrap_on_timeout)
                if self.cfg.method == "vlm_only":
                    history.append(HistoryItem(self.texts[prompt], obs.scene))
                # A(s') is needed to act on (not last) or to bootstrap from (the stored
                # transition, unless terminal; a success a person may still label a failure
                # keeps it too). Greedy episodes store nothing: their last s' is not asked.
                provisional = success and spec.labelled
                wanted = not last or (not greedy and (not terminal or provisional))
                next_candidates, next_q = (
                    self._prepare(next_obs, t + 1, steps, tuple(history))
                    if wanted
                    else (np.zeros(0, np.int64), None)
                )
                decision_seconds = time.perf_counter() - t0
                env_seconds += result.env_seconds + observe_seconds
                vla_seconds += result.vla_seconds
                trace.add(
                    obs,
                    next_obs,
                    prompt,
                    float(success),
                    float(terminal),
                    self._mask(next_candidates),
                )
                framework = (
                    decision_seconds - result.env_seconds - result.vla_seconds - observe_seconds
                )
                trace.overhead_ms.append(1e3 * framework)
                obs, candidates, q_values = next_obs, next_candidates, next_q
                if t == 0:
                    self.faults.worker_mid_episode(self._episodes_run)
                if last:
                    ended_by = (
                        "success" if success else "truncated" if result.truncated else ended_by
                    )
                    break
        self._where = None
        if video:
            path = Path(f"{video}-{'ok' if success else 'fail'}.mp4")
            path.parent.mkdir(parents=True, exist_ok=True)
            recorder.save(path)
        end = time.monotonic()
        summary = {
            "episode": episode,
            "worker": self.index,
            "seed": seed,
            "greedy": greedy,
            "prompts": [[p, self.texts[p]] for p in trace.prompts],
            "rewards": trace.rewards,
            "success": success,
            # success, truncated (a robot stopped or ran out of time), or max_decisions
            "ended_by": ended_by,
            "moved": moved,  # the end effector moved (only homing from home: it did not)
            "decisions": len(trace.prompts),
            "steps": steps,
            "wall_seconds": end - start,
            # On this worker's clock: the driver measures how long a worker waited between
            # returning an episode and starting its next (summary: worker_wait_ms_*).
            "started_at": start,
            "ended_at": end,
            "env_seconds": env_seconds,
            "vla_seconds": vla_seconds,
            "policy_versions": trace.versions,
            "staleness_updates": trace.staleness,
            "overhead_ms": trace.overhead_ms,
            # The policy server that served the whole episode (None: the VLA is in process).
            "vla_server": getattr(self.vla.policy, "uri", None),
            **env.episode_info(),
        }
        if video:
            summary["video"] = str(path)
        return summary, (None if greedy else trace.batch())
