"""The skill chain's world: a synthetic test bed with SARL's structure and a near-zero step
cost, shared by its environment (envs/skill_chain.py), its VLA (vla/skill_chain.py) and
its VLM (vlm/skill_chain.py), as LIBERO's package is shared by theirs.

It is not a robot simulator. It exists to test the learning loop end to end in seconds
and to measure the framework's own overhead per decision. A task is a hidden sequence of
`stages` skills drawn from a small vocabulary of inverse pairs (open/close the drawer,
...). The VLA knows each skill's canonical name well, one paraphrase poorly and nothing
else; the VLM reads the stage off the image; only RL learns which prompt works when.
Greedy over the right prompts succeeds ~98% (5 decisions, 3 stages); uniform choice over
the candidates ~3%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sarl_dist.prompt_text import normalize_prompt


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
BLOCK, TOP, LEFT, GAP = 12, 8, 4, 14
CANON = {normalize_prompt(s.name): i for i, s in enumerate(SKILLS)}
PARAPHRASES = {normalize_prompt(s.paraphrase): i for i, s in enumerate(SKILLS)}


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


def decode_stage(image: np.ndarray, stages: int) -> int:
    """How many stage blocks the image shows (what a VLM would read off the scene)."""
    count = 0
    for i in range(stages):
        x = LEFT + i * GAP
        patch = image[TOP + 2 : TOP + BLOCK - 2, x + 2 : x + BLOCK - 2].astype(np.int32)
        if np.ptp(patch.reshape(-1, 3).mean(0)) > 40:  # a saturated colour, not the grey background
            count += 1
    return count
