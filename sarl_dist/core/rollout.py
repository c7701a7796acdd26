"""The rollout loop: one episode of SARL's semantic MDP, read top to bottom.

At each decision t the loop asks for the candidate prompts A(s) (the VLM, or a fixed
plan), computes Q(s, .) from the newest published weights while the VLM answers, lets the
method choose a prompt id among A(s), and runs it: the VLA acts under the prompt for the
decision interval (or the arm goes home). Then it observes s' and records the transition
(s, l, r, done, s', A(s')). The same loop runs in a Ray EnvWorker, in a local run, in
evaluation (greedy, nothing stored) and in `sarl probe`.

Termination has one contract, decided here only (`transition_done`): an episode ends when
the task succeeds (terminated: no bootstrap) or when it is cut (truncated: the last
decision, a robot that stopped or ran out of time); a truncated transition bootstraps
from s' when the environment's spec says truncation is a time limit. A transition that
bootstraps keeps A(s') (the replay buffer refuses one without), and so does a success a
person may still label a failure.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sarl_dist.core.interfaces import (
    ActionSource,
    CandidateSource,
    Environment,
    EnvSpec,
    Observation,
    StepResult,
    ValueSource,
)
from sarl_dist.core.prompt_cache import RESET_ID
from sarl_dist.core.replay import Batch
from sarl_dist.methods import Method

MOVED = 0.002  # m: an end effector displaced less than this in a decision did not move


def run_prompt(env: Environment, prompt: str, vla: ActionSource) -> StepResult:
    """One semantic step: the VLA under `prompt` for the decision interval, or to success.
    Observations are built only when the VLA asks for one (after its chunk runs out)."""
    start, vla_before, observing = time.perf_counter(), vla.infer_seconds, 0.0
    vla.reset()

    def observe() -> dict:
        nonlocal observing
        t = time.perf_counter()
        obs = env.vla_observation(prompt)
        observing += time.perf_counter() - t
        return obs

    steps = 0
    success = env.success()
    while steps < env.spec.decision_steps and not success and not env.truncated():
        env.step(vla.next_action(observe))
        steps += 1
        success = env.success()
    vla_seconds = vla.infer_seconds - vla_before
    env_seconds = time.perf_counter() - start - vla_seconds - observing
    return StepResult(steps, success, env.truncated(), env_seconds, vla_seconds, observing)


def run_reset(env: Environment) -> StepResult:
    """Reset-to-home, the built-in semantic action: the arm back to its initial pose."""
    start = time.perf_counter()
    steps = env.reset_to_home(env.spec.decision_steps)
    return StepResult(steps, env.success(), env.truncated(), time.perf_counter() - start, 0.0)


def transition_done(terminated: bool, truncated: bool, spec: EnvSpec) -> bool:
    """Whether a transition's target stops at its reward (no bootstrap from s')."""
    return terminated or (truncated and not spec.bootstrap_truncated)


@dataclass(frozen=True)
class Episode:
    """What the driver asks for: evaluation episode j (index -1 - j, greedy) starts from the
    benchmark's j-th fixed initial state, as LIBERO's protocol does. `decisions` caps it
    below the environment's horizon (a probe's fixed sequence)."""

    index: int
    seed: int
    greedy: bool
    decisions: int | None = None

    @property
    def init_index(self) -> int | None:
        return -1 - self.index if self.index < 0 else None


@dataclass
class Trace:
    """What one episode records, decision by decision."""

    num_prompts: int
    transitions: list[tuple] = field(default_factory=list)
    prompts: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    staleness: list[int] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)

    def add(
        self,
        obs: Observation,
        nxt: Observation,
        prompt: int,
        reward: float,
        done: bool,
        next_candidates: np.ndarray,
    ) -> None:
        mask = np.zeros(self.num_prompts, dtype=bool)
        mask[next_candidates] = True
        self.prompts.append(prompt)
        self.rewards.append(reward)
        self.transitions.append(
            (obs.image, obs.proprio, prompt, reward, float(done), nxt.image, nxt.proprio, mask)
        )

    def batch(self) -> Batch:
        return Batch(*(np.stack(c) for c in zip(*self.transitions, strict=True)))


@dataclass
class Parts:
    """An episode's collaborators: the environment, the VLA, who chooses, where A(s) and
    Q(s, .) come from, and the prompt texts known so far (id -> text, kept up to date)."""

    env: Environment
    vla: ActionSource
    method: Method
    candidates: CandidateSource
    values: ValueSource | None
    texts: dict[int, str]
    num_prompts: int


NO_CANDIDATES = np.zeros(0, np.int64)


@dataclass
class _Tally:
    """What an episode adds up as it runs."""

    steps: int = 0
    success: bool = False
    moved: bool = False
    ended_by: str = "max_decisions"
    # The episode's time budget (s): physics (the environment's steps), observe (s' and the
    # VLA's inputs: cameras, state), vla (its round trips), q (Q(s, .)), vlm (A(s)); the rest
    # of the wall time (reset, the method, recording, logging) is `other`.
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("physics", "observe", "vla", "q", "vlm"), 0.0)
    )


def run_episode(
    parts: Parts,
    episode: Episode,
    recorder: Any = None,
    on_decision: Callable[[int, dict | None], None] = lambda t, where: None,
) -> tuple[dict, Batch | None]:
    """One episode: its summary and its transitions (None when greedy: nothing is stored).

    `recorder` (report.video.Recorder, or None) films it with the active prompt drawn on
    the frames; `on_decision(t, where)` is told where the episode is before each decision
    (where=None after the last), for a live view and for fault injection."""
    env = parts.env
    start, rng = time.monotonic(), np.random.default_rng([episode.seed, 1])
    trace, tally = Trace(parts.num_prompts), _Tally()
    history: list[tuple[str, np.ndarray]] = []  # what a method that shows history is shown
    env.reset(episode.seed, init_index=episode.init_index)
    parts.candidates.reset()
    if parts.values is not None:
        parts.values.reset()
    obs = env.observe()
    candidates, q = _prepare(parts, obs, 0, 0, history, tally)
    horizon = episode.decisions or env.spec.max_decisions
    with recorder or contextlib.nullcontext():
        for t in range(horizon):
            prompt = parts.method.choose(q, candidates, episode.greedy, rng)
            where = {
                "decision": t,
                "decisions": horizon,
                "steps": tally.steps,
                "prompt": parts.texts[prompt],
            }
            if recorder is not None:
                recorder.prompt = where["prompt"]
            on_decision(t, where)
            obs, candidates, q, last = _decide(
                parts, episode, t, horizon, prompt, obs, history, trace, tally
            )
            if last:
                break
    on_decision(len(trace.prompts), None)
    return _summary(parts, episode, trace, tally, start), None if episode.greedy else trace.batch()


def _prepare(
    parts: Parts, obs: Observation, t: int, steps: int, history: list, tally: _Tally
) -> tuple[np.ndarray, np.ndarray | None]:
    """A(s) and Q(s, .): the VLM is asked first, the Q forward runs while it answers."""
    t0 = time.perf_counter()
    pending = parts.candidates.ask(obs, t, steps, tuple(history))
    t1 = time.perf_counter()
    q = parts.values.values(obs) if parts.values is not None else None
    t2 = time.perf_counter()
    ids, texts = parts.candidates.collect(pending)
    parts.texts.update(texts)
    tally.seconds["q"] += t2 - t1
    tally.seconds["vlm"] += time.perf_counter() - t2 + t1 - t0
    return ids, q


def _decide(
    parts: Parts,
    episode: Episode,
    t: int,
    horizon: int,
    prompt: int,
    obs: Observation,
    history: list,
    trace: Trace,
    tally: _Tally,
) -> tuple[Observation, np.ndarray, np.ndarray | None]:
    """Decision t: run the prompt, observe s', record the transition; A(s') and Q(s', .)."""
    env, spec, text = parts.env, parts.env.spec, parts.texts[prompt]
    t0 = time.perf_counter()
    trace.versions.append(parts.values.version if parts.values else -1)
    trace.staleness.append(parts.values.staleness if parts.values else 0)
    if parts.values is not None:
        parts.values.prefetch()  # the next decision's weights, while the VLA acts
    result = run_reset(env) if prompt == RESET_ID else run_prompt(env, text, parts.vla)
    t1 = time.perf_counter()
    next_obs = env.observe()
    observe_seconds = time.perf_counter() - t1
    tally.steps += result.steps
    tally.success = result.terminated
    tally.moved = tally.moved or bool(np.abs(next_obs.proprio[:3] - obs.proprio[:3]).max() > MOVED)
    truncated = result.truncated or t == horizon - 1
    last = tally.success or truncated
    done = transition_done(tally.success, truncated, spec)
    if parts.method.shows_history:
        history.append((text, obs.scene))
    # A(s') is needed to act on (not last) or to bootstrap from (a stored transition that is
    # not done; a success a person may still overrule). Greedy episodes store nothing, so
    # their last s' is not asked about (a paid VLM call otherwise).
    keep = not episode.greedy and (not done or (tally.success and spec.labelled))
    next_candidates, next_q = (
        _prepare(parts, next_obs, t + 1, tally.steps, history, tally)
        if not last or keep
        else (NO_CANDIDATES, None)
    )
    tally.seconds["physics"] += result.env_seconds
    tally.seconds["observe"] += observe_seconds + result.observe_seconds
    tally.seconds["vla"] += result.vla_seconds
    trace.add(obs, next_obs, prompt, float(tally.success), done, next_candidates)
    framework = time.perf_counter() - t0 - result.env_seconds - result.vla_seconds
    trace.overhead_ms.append(1e3 * (framework - observe_seconds - result.observe_seconds))
    if tally.success or result.truncated:
        tally.ended_by = "success" if tally.success else "truncated"
    return next_obs, next_candidates, next_q, last


def _summary(parts: Parts, episode: Episode, trace: Trace, tally: _Tally, start: float) -> dict:
    end = time.monotonic()
    return {
        "episode": episode.index,
        "seed": episode.seed,
        "greedy": episode.greedy,
        "prompts": [[p, parts.texts[p]] for p in trace.prompts],
        "rewards": trace.rewards,
        "success": tally.success,
        # success, truncated (a robot stopped or ran out of time), or max_decisions
        "ended_by": tally.ended_by,
        "moved": tally.moved,  # the end effector moved (only homing from home: it did not)
        "decisions": len(trace.prompts),
        "steps": tally.steps,
        "wall_seconds": end - start,
        # On this worker's clock: the driver measures how long a worker waited between
        # returning an episode and starting its next (summary: worker_wait_ms_*).
        "started_at": start,
        "ended_at": end,
        "seconds": tally.seconds | {"other": end - start - sum(tally.seconds.values())},
        "policy_versions": trace.versions,
        "staleness_updates": trace.staleness,
        "overhead_ms": trace.overhead_ms,
        **parts.env.episode_info(),
    }
