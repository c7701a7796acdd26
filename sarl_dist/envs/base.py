"""The environment interface every worker drives: a LIBERO scene, a robot or the test bed.

An environment owns the low-level loop; a semantic action is "run this prompt through
the VLA for the decision interval", or the reserved reset-to-home. The worker never
sees low-level actions, so the same worker code runs any environment.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from sarl_dist.vla.base import ChunkedVLA


@dataclass(frozen=True)
class EnvSpec:
    task: str  # the task sentence (what the VLM is told; the zero-shot prompt)
    max_decisions: int  # H: semantic decisions per episode
    decision_steps: int  # low-level steps per semantic decision
    action_dim: int  # width of one low-level VLA action
    # A person's label at the end decides success (a robot): a success the environment
    # reports during the episode may still be labelled a failure.
    labelled: bool = False


@dataclass
class Observation:
    image: np.ndarray  # (64, 64, 3) uint8 for the Q-ensemble
    proprio: np.ndarray  # (8,) float32
    scene: np.ndarray  # what the VLM looks at (agentview, any size), uint8


@dataclass
class ActionResult:
    steps: int  # low-level steps taken
    success: bool
    env_seconds: float  # physics and observation building
    vla_seconds: float  # inside the VLA policy
    truncated: bool = False  # the episode must end here (a robot stopped or ran out of time)


class Env(ABC):
    spec: EnvSpec

    @abstractmethod
    def reset(self, seed: int, init_index: int | None = None) -> None:
        """Start an episode; `seed` fixes everything random in it (init state, noise).

        `init_index` picks the benchmark's fixed initial condition of that index instead
        (evaluation runs over them in order, as LIBERO's protocol does), where it has any.
        """

    @abstractmethod
    def observe(self) -> Observation: ...

    @abstractmethod
    def vla_observation(self, prompt: str) -> dict[str, Any]:
        """The VLA's input (openpi keys), built only when the VLA will read it."""

    @abstractmethod
    def step(self, action: np.ndarray) -> None:
        """One low-level control step."""

    @abstractmethod
    def success(self) -> bool: ...

    @abstractmethod
    def reset_to_home(self, max_steps: int) -> int:
        """Move the arm back to its initial pose without moving objects; returns steps used."""

    def truncated(self) -> bool:
        """The episode cannot go on (a robot stopped, its time ran out); simulators never."""
        return False

    def episode_info(self) -> dict[str, Any]:
        """What this environment adds to an episode's summary (a robot: safety events)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release simulator or robot resources."""

    def run_prompt(self, prompt: str, vla: ChunkedVLA) -> ActionResult:
        """One semantic action: the VLA under `prompt` for the decision interval, or to success."""
        start, vla_before = time.perf_counter(), vla.infer_seconds
        vla.reset()
        steps = 0
        success = self.success()
        while steps < self.spec.decision_steps and not success and not self.truncated():
            self.step(vla.next_action(lambda: self.vla_observation(prompt)))
            steps += 1
            success = self.success()
        vla_seconds = vla.infer_seconds - vla_before
        return ActionResult(
            steps,
            success,
            time.perf_counter() - start - vla_seconds,
            vla_seconds,
            self.truncated(),
        )

    def run_reset(self) -> ActionResult:
        start = time.perf_counter()
        steps = self.reset_to_home(self.spec.decision_steps)
        return ActionResult(
            steps, self.success(), time.perf_counter() - start, 0.0, self.truncated()
        )
