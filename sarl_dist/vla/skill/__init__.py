"""The skill VLA: pi0.5 fine-tuned on LIBERO-90, as a scripted policy (docs/skill_vla.md).

curriculum: what LIBERO-90 taught (its instructions and goals per scene); grammar and
words: how a prompt is heard; goal: LIBERO's predicates judged from the observation;
objects and fixtures: what it knows of LIBERO's things; skills: one per predicate;
policy: the openpi-compatible policy that puts them together.
"""

from sarl_dist.vla.skill.policy import HORIZON, SkillVLA

__all__ = ["HORIZON", "SkillVLA"]
