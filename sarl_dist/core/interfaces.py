"""What the rollout loop (core/rollout.py) needs of the parts it drives, and what they tell
it, as small structural interfaces: an environment (LIBERO, a robot, the skill chain:
sarl_dist/envs/), a chunked VLA (sarl_dist/vla/), a source of candidate prompts (the
VLM service, or a fixed plan) and a source of Q-values (the Learner's weights). The parts
implement them without importing this module; the rollout and the tests type against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    task: str  # the task sentence (what the VLM is told; the zero-shot prompt)
    max_decisions: int  # H: semantic decisions per episode
    decision_steps: int  # low-level steps per semantic decision
    action_dim: int  # width of one low-level VLA action
    # A person's label at the end decides success (a robot): a success the environment
    # reports during the episode may still be labelled a failure.
    labelled: bool = False
    # Truncation (the episode cap, a robot's time cap or stop) is a time limit, not a failure
    # state: the last transition bootstraps from its next state.
    bootstrap_truncated: bool = True


@dataclass
class Observation:
    image: np.ndarray  # (64, 64, 3) uint8 for the Q-ensemble
    proprio: np.ndarray  # (8,) float32
    scene: np.ndarray  # what the VLM looks at (agentview, any size), uint8


@dataclass
class StepResult:
    """One semantic step: the VLA under a prompt for the decision interval (or homing)."""

    steps: int  # low-level steps taken
    terminated: bool  # the task succeeded: the episode ends, nothing to bootstrap from
    truncated: bool  # the environment cannot go on (a robot stopped, its time ran out)
    env_seconds: float  # physics: the environment's steps and success checks
    vla_seconds: float  # inside the VLA policy
    observe_seconds: float = 0.0  # building the VLA's observations (cameras, state)


class Environment(Protocol):
    """What an environment offers the loop (envs.base.Env implements it)."""

    spec: EnvSpec

    def reset(self, seed: int, init_index: int | None = None) -> None: ...
    def observe(self) -> Observation: ...
    def vla_observation(self, prompt: str) -> dict[str, Any]: ...
    def step(self, action: np.ndarray) -> None: ...
    def success(self) -> bool: ...
    def truncated(self) -> bool: ...
    def reset_to_home(self, max_steps: int) -> int: ...
    def episode_info(self) -> dict[str, Any]: ...


class ActionSource(Protocol):
    """A VLA with replanning (vla.base.ChunkedVLA): the next low-level action for a prompt."""

    infer_seconds: float

    def reset(self) -> None: ...
    def next_action(self, observe: Callable[[], dict[str, Any]]) -> np.ndarray: ...


class CandidateSource(Protocol):
    """A(s): asked first, collected later, so the Q forward runs while the VLM thinks."""

    def reset(self) -> None:
        """A new episode begins."""
        ...

    def ask(self, obs: Observation, t: int, steps: int, history: tuple) -> Any: ...
    def collect(self, pending: Any) -> tuple[np.ndarray, dict[int, str]]:
        """(candidate ids, the texts of any ids new to the caller)."""
        ...


class ValueSource(Protocol):
    """Q(s, .) of every prompt, from the newest weights the Learner has published."""

    version: int  # of the weights in use
    staleness: int  # Learner updates those weights lag behind, when fetched

    def reset(self) -> None:
        """A new episode begins (with the weights published by now)."""
        ...

    def prefetch(self) -> None: ...
    def values(self, obs: Observation) -> np.ndarray: ...
