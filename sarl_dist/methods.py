"""Methods: who picks the prompt at each decision. One small interface (`Method`), one
registry (`METHODS`): a new baseline is one class and one line here, and nothing else in
the code asks which method runs. The config validates `method` against the registry, and
each class carries its own rules (what it needs of the config).

Every method chooses among the decision's candidate prompt ids A(s) and never puts mass
on a prompt outside them. SARL acts on the Q-ensemble's values; the baselines do not:

| method | candidates A(s) | choice |
|---|---|---|
| sarl | the VLM's | softmax(Q / temperature) over A(s); greedy in evaluation |
| random | the VLM's | uniform over A(s) |
| zero_shot | the task sentence | that prompt, every decision |
| oracle | the task's atomic prompt sequence | its next prompt (the last one repeated) |
| vlm_only | the VLM's, asked with the episode so far | the VLM's first choice |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:  # the config imports this module
    from sarl_dist.config import Config

VLM_ONLY_DECISION_STEPS = 40  # SARL's VLM-only baseline on LIBERO: a decision every 40 steps


def softmax_choice(
    q: np.ndarray, candidates: np.ndarray, temperature: float, rng: np.random.Generator
) -> int:
    """Sample one candidate id with probability softmax(q[c] / temperature)."""
    logits = q[candidates].astype(np.float64) / temperature
    p = np.exp(logits - logits.max())
    return int(candidates[rng.choice(len(candidates), p=p / p.sum())])


def greedy_choice(q: np.ndarray, candidates: np.ndarray) -> int:
    return int(candidates[int(np.argmax(q[candidates]))])


def uniform_choice(candidates: np.ndarray, rng: np.random.Generator) -> int:
    return int(candidates[rng.integers(len(candidates))])


class Method:
    """How a prompt id is chosen among a decision's candidates."""

    learns: ClassVar[bool] = False  # a Q-ensemble is trained, and its values reach `choose`
    asks_vlm: ClassVar[bool] = True  # A(s) comes from the VLM (else from `fixed_prompts`)
    shows_history: ClassVar[bool] = False  # the VLM is shown the episode's earlier steps

    def __init__(self, cfg: Config) -> None:
        self.temperature = cfg.learner.temperature

    @classmethod
    def check(cls, cfg: Config) -> Config:
        """The config this method runs with: refused (ValueError) or adjusted to its needs."""
        return cfg

    @staticmethod
    def fixed_prompts(task: str, atomic: Callable[[], tuple[str, ...]]) -> tuple[str, ...] | None:
        """The prompts a fixed-sequence method issues, decision by decision; None: it asks
        the VLM. `atomic()` gives the task's atomic prompt sequence."""
        return None

    def choose(
        self, q: np.ndarray | None, candidates: np.ndarray, greedy: bool, rng: np.random.Generator
    ) -> int:
        """One of `candidates`; `q` holds Q(s, .) for every prompt when the method learns."""
        raise NotImplementedError


class SARL(Method):
    learns = True

    def choose(self, q, candidates, greedy, rng):
        if greedy:
            return greedy_choice(q, candidates)
        return softmax_choice(q, candidates, self.temperature, rng)


class Uniform(Method):
    def choose(self, q, candidates, greedy, rng):
        return uniform_choice(candidates, rng)


class FirstCandidate(Method):
    """The first candidate offered: a fixed sequence's next prompt, or the VLM's own pick."""

    def choose(self, q, candidates, greedy, rng):
        return int(candidates[0])


class TaskSentence(FirstCandidate):
    asks_vlm = False

    @staticmethod
    def fixed_prompts(task, atomic):
        return (task,)


class AtomicSequence(FirstCandidate):
    asks_vlm = False

    @classmethod
    def check(cls, cfg):
        if cfg.env.kind == "robot":
            raise ValueError("method: oracle needs a known atomic sequence (LIBERO, skill chain)")
        return cfg

    @staticmethod
    def fixed_prompts(task, atomic):
        return atomic()


class VLMOnly(FirstCandidate):
    """The VLM picks, from the episode's history; it decides every `vlm_only_decision_steps`
    low-level steps (SARL's: 40 on LIBERO) over an episode of the same length in steps."""

    shows_history = True

    @classmethod
    def check(cls, cfg):
        default = VLM_ONLY_DECISION_STEPS if cfg.env.kind == "libero" else cfg.env.decision_steps
        steps = cfg.vlm_only_decision_steps or default
        if cfg.env.decision_steps == steps:
            return cfg
        total = cfg.env.max_decisions * cfg.env.decision_steps
        env = cfg.env.model_copy(
            update={"decision_steps": steps, "max_decisions": max(1, total // steps)}
        )
        return cfg.model_copy(update={"env": env})


METHODS: dict[str, type[Method]] = {
    "sarl": SARL,
    "random": Uniform,
    "zero_shot": TaskSentence,
    "oracle": AtomicSequence,
    "vlm_only": VLMOnly,
}
