"""The environment interface every worker drives: a LIBERO scene, a robot or the test bed.

An environment owns the low-level loop; a semantic action is "run this prompt through
the VLA for the decision interval", or the reserved reset-to-home. The worker never
sees low-level actions, so the same worker code runs any environment.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from sarl_dist.core.interfaces import ActionSource, EnvSpec, Observation, StepResult
from sarl_dist.core.rollout import run_prompt, run_reset

__all__ = ["Env", "EnvSpec", "Observation", "StepResult"]


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

    def run_prompt(self, prompt: str, vla: ActionSource) -> StepResult:
        """One semantic step under `prompt` (core.rollout.run_prompt), for scripts and probes."""
        return run_prompt(self, prompt, vla)

    def run_reset(self) -> StepResult:
        """Reset-to-home as a semantic step (core.rollout.run_reset)."""
        return run_reset(self)
