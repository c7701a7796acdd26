"""Skill chain: a synthetic test bed with SARL's structure and a near-zero step cost.

It is not a robot simulator. It exists to test the learning loop end to end in seconds
and to measure the framework's own overhead per decision. It has the three parts a
LIBERO run has, each behind the same interface:

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

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from sarl_dist.config import EnvConfig, SkillChainConfig
from sarl_dist.core.prompt_cache import normalize_prompt
from sarl_dist.envs.base import Env, EnvSpec, Observation
from sarl_dist.vlm.base import ProposalRequest


@dataclass(frozen=True)
class Skill:
    name: str  # canonical: the VLA knows it well
    paraphrase: str  # the VLA knows it poorly
    unfamiliar: str  # the VLA does not know it
    color: tuple[int, int, int]


SKILLS: tuple[Skill, ...] = (
    Skill(
        "open the drawer", "pull the drawer open", "extend the sliding compartment", (220, 60, 60)
    ),
    Skill(
        "close the drawer", "push the drawer shut", "retract the sliding compartment", (60, 220, 60)
    ),
    Skill(
        "pick up the red block", "grab the red block", "acquire the crimson cuboid", (60, 60, 220)
    ),
    Skill(
        "put down the red block",
        "set the red block down",
        "deposit the crimson cuboid",
        (220, 220, 60),
    ),
    Skill("turn on the lamp", "switch the lamp on", "energise the luminaire", (220, 60, 220)),
    Skill("turn off the lamp", "switch the lamp off", "de-energise the luminaire", (60, 220, 220)),
    Skill("lift the lid", "take the lid off", "elevate the cover", (240, 140, 40)),
    Skill("put the lid on", "place the lid back", "reinstate the cover", (140, 40, 240)),
    Skill("open the gate", "swing the gate open", "unbar the portal", (40, 240, 140)),
    Skill("close the gate", "swing the gate shut", "bar the portal", (250, 250, 250)),
)
NUM_SKILLS = len(SKILLS)
TASKS = 10
_BLOCK, _TOP, _LEFT, _GAP = 12, 8, 4, 14
_CANON = {normalize_prompt(s.name): i for i, s in enumerate(SKILLS)}
_PARA = {normalize_prompt(s.paraphrase): i for i, s in enumerate(SKILLS)}


def inverse(skill: int) -> int:
    """Skills come in inverse pairs (2k, 2k+1)."""
    return skill ^ 1


def task_skills(task: int, stages: int) -> list[int]:
    """The hidden sequence: one skill from each of `stages` different pairs, seeded by task."""
    rng = np.random.default_rng(1000 + task)
    pairs = rng.permutation(NUM_SKILLS // 2)[:stages]
    return [int(2 * p + rng.integers(2)) for p in pairs]


def task_sentence(skills: list[int]) -> str:
    return ", then ".join(SKILLS[s].name for s in skills)


def resolve_task(task: int | str, stages: int) -> int:
    """Task index from an index, `chain-N` or the task sentence."""
    if isinstance(task, int):
        index = task
    elif task.startswith("chain-") and task[6:].isdigit():
        index = int(task[6:])
    else:
        sentences = {
            normalize_prompt(task_sentence(task_skills(i, stages))): i for i in range(TASKS)
        }
        if normalize_prompt(task) not in sentences:
            raise ValueError(f"unknown skill-chain task {task!r}: use 0..{TASKS - 1} or chain-N")
        index = sentences[normalize_prompt(task)]
    if not 0 <= index < TASKS:
        raise ValueError(f"skill-chain task index {index} is out of range 0..{TASKS - 1}")
    return index


def spec(cfg: EnvConfig) -> EnvSpec:
    skills = task_skills(resolve_task(cfg.task, cfg.skill_chain.stages), cfg.skill_chain.stages)
    return EnvSpec(task_sentence(skills), cfg.max_decisions, cfg.decision_steps, NUM_SKILLS)


def decode_stage(image: np.ndarray, stages: int) -> int:
    """How many stage blocks the image shows (what a VLM would read off the scene)."""
    count = 0
    for i in range(stages):
        x = _LEFT + i * _GAP
        patch = image[_TOP + 2 : _TOP + _BLOCK - 2, x + 2 : x + _BLOCK - 2].astype(np.int32)
        if np.ptp(patch.reshape(-1, 3).mean(0)) > 40:  # a saturated colour, not the grey background
            count += 1
    return count


class SkillChainEnv(Env):
    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg: SkillChainConfig = cfg.skill_chain
        self.skills = task_skills(resolve_task(cfg.task, self.cfg.stages), self.cfg.stages)
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
            x = _LEFT + i * _GAP
            img[_TOP : _TOP + _BLOCK, x : x + _BLOCK] = SKILLS[self.skills[i]].color
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


class SkillChainVLA:
    """openpi BasePolicy-compatible; chunks of `horizon` effort vectors."""

    def __init__(self, cfg: SkillChainConfig, seed: int = 0, horizon: int = 10) -> None:
        self.cfg, self.horizon = cfg, horizon
        self._rng = np.random.default_rng(seed)

    def ground(self, prompt: str) -> tuple[int, float]:
        """(skill, effort) a prompt elicits: names well, paraphrases poorly, the rest wrongly."""
        key = normalize_prompt(prompt)
        if key in _CANON:
            return _CANON[key], self.cfg.p_canonical
        if key in _PARA:
            return _PARA[key], self.cfg.p_paraphrase
        digest = hashlib.sha256(key.encode()).digest()
        return digest[0] % NUM_SKILLS, self.cfg.p_canonical

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        skill, effort = self.ground(str(obs["prompt"]))
        actions = self._rng.normal(0.0, 0.01, size=(self.horizon, NUM_SKILLS)).astype(np.float32)
        actions[:, skill] += effort
        return {"actions": actions}

    def reset(self) -> None:
        pass


class SkillChainProposer:
    def __init__(self, cfg: SkillChainConfig, seed: int = 0) -> None:
        self.cfg, self.seed = cfg, seed

    def propose(self, request: ProposalRequest) -> list[str]:
        steps = [_CANON.get(normalize_prompt(p)) for p in request.task.split(", then ")]
        if any(s is None for s in steps):
            raise ValueError(f"not a skill-chain task: {request.task!r}")
        stage = min(decode_stage(request.image, len(steps)), len(steps) - 1)
        rng = request.scene_rng(self.seed)
        nxt = SKILLS[steps[stage]]
        helpful = nxt.name if rng.random() < self.cfg.p_helpful else nxt.paraphrase
        others = [request.task, nxt.unfamiliar]
        for i, s in enumerate(steps):
            if i != stage:
                others += [SKILLS[s].name, SKILLS[s].paraphrase]
        if stage > 0:
            others.append(SKILLS[inverse(steps[stage - 1])].name)
        pool = [helpful, *(others[i] for i in rng.permutation(len(others)))]
        return request.allowed(pool)[: request.n]
