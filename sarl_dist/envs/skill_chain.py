"""Skill chain: a synthetic test bed with SARL's structure and a near-zero step cost.

It is not a robot simulator. It exists to test the learning loop end to end in seconds
and to measure the framework's own overhead per decision. It has the three parts a
LIBERO run has, each behind the same interface (the world they share:
sarl_dist/skill_chain.py):

- SkillChainEnv: a task is a hidden sequence of `stages` skills drawn from a small
  vocabulary of inverse pairs (open/close the drawer, ...). A low-level action is a
  vector of per-skill "efforts"; after `decision_steps` steps of one dominant skill the
  skill resolves: the next required skill advances the stage with probability equal to
  the mean effort; the inverse of the last completed skill undoes it with probability
  p_undo; anything else changes nothing. The 64x64 image shows one coloured block per
  completed stage on a noisy background; proprio shows the arm (current skill, progress),
  never the stage.
- SkillChainVLA: an openpi-style policy that "understands" the canonical skill names
  (effort p_canonical) and one known paraphrase each (p_paraphrase); anything else, the
  compound task sentence included, is misgrounded to a skill picked by a hash of the text.
- SkillChainProposer: a stand-in VLM that reads the stage from the image and the steps
  from the task sentence, and offers n candidates: the canonical next step (with chance
  p_helpful, else its paraphrase) plus plausible-but-wrong ones (other steps, unfamiliar
  paraphrases, the undo of the last step, the task sentence itself).

Greedy over the right prompts succeeds ~98% (5 decisions, 3 stages); uniform choice
over the candidates ~3%. Prompt ids are learned, so only RL closes the gap.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sarl_dist.config import ConfigError, EnvConfig, SkillChainConfig
from sarl_dist.envs.base import Env, EnvSpec, Observation
from sarl_dist.skill_chain import (
    BLOCK,
    GAP,
    LEFT,
    NUM_SKILLS,
    SKILLS,
    TOP,
    inverse,
    resolve_task,
    task_sentence,
    task_skills,
)


def _skills(cfg: EnvConfig) -> list[int]:
    try:
        return task_skills(resolve_task(cfg.task, cfg.skill_chain.stages), cfg.skill_chain.stages)
    except ValueError as exc:
        raise ConfigError(f"env.task: {exc}") from None


def spec(cfg: EnvConfig) -> EnvSpec:
    return EnvSpec(
        task_sentence(_skills(cfg)),
        cfg.max_decisions,
        cfg.decision_steps,
        NUM_SKILLS,
        bootstrap_truncated=cfg.bootstrap_truncated,
    )


def make(cfg: EnvConfig) -> SkillChainEnv:
    return SkillChainEnv(cfg)


def atomic_prompts(cfg: EnvConfig) -> tuple[str, ...]:
    """The canonical names of the task's skills, in order."""
    return tuple(SKILLS[s].name for s in _skills(cfg))


class SkillChainEnv(Env):
    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg: SkillChainConfig = cfg.skill_chain
        self.skills = _skills(cfg)
        self.spec = spec(cfg)
        self.reset(0)

    def reset(self, seed: int, init_index: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)  # one scene, so no fixed initial conditions
        self.stage = 0
        self._background = int(self._rng.integers(70, 140))
        self._current = -1
        self._effort: list[float] = []

    def success(self) -> bool:
        return self.stage >= len(self.skills)

    def step(self, action: np.ndarray) -> None:
        if self.cfg.step_seconds:
            time.sleep(self.cfg.step_seconds)
        skill = int(np.argmax(action))
        if skill != self._current:
            self._current, self._effort = skill, []
        self._effort.append(float(np.clip(action[skill], 0.0, 1.0)))
        if len(self._effort) >= self.spec.decision_steps:
            self._resolve(skill, float(np.mean(self._effort)))
            self._effort = []

    def _resolve(self, skill: int, effort: float) -> None:
        if self.success():
            return
        if skill == self.skills[self.stage]:
            self.stage += int(self._rng.random() < effort)
        elif self.stage > 0 and skill == inverse(self.skills[self.stage - 1]):
            self.stage -= int(self._rng.random() < self.cfg.p_undo * effort)

    def reset_to_home(self, max_steps: int) -> int:
        self._current, self._effort = -1, []
        return min(max_steps, 1)

    def observe(self) -> Observation:
        img = np.full((64, 64, 3), self._background, dtype=np.int16)
        for i in range(self.stage):
            x = LEFT + i * GAP
            img[TOP : TOP + BLOCK, x : x + BLOCK] = SKILLS[self.skills[i]].color
        if self._current >= 0:
            x = 4 + 5 * self._current
            img[50:58, x : x + 6] = 255
        img += self._rng.integers(-8, 9, size=img.shape, dtype=np.int16)
        image = np.clip(img, 0, 255).astype(np.uint8)
        proprio = np.zeros(8, dtype=np.float32)
        proprio[0] = (self._current + 1) / NUM_SKILLS
        proprio[1] = len(self._effort) / self.spec.decision_steps
        proprio[2:] = self._rng.normal(0.0, 0.05, size=6)
        return Observation(image=image, proprio=proprio, scene=image)

    def vla_observation(self, prompt: str) -> dict[str, Any]:
        return {"observation/state": self.observe().proprio, "prompt": prompt}
