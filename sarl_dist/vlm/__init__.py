"""Candidate-prompt proposers behind one interface (vlm.base.Proposer), built from the config."""

from __future__ import annotations

from sarl_dist.config import Config
from sarl_dist.vlm.base import Proposer


def make_proposer(cfg: Config) -> Proposer:
    if cfg.vlm.backend == "skill_chain":
        from sarl_dist.envs.skill_chain import SkillChainProposer

        return SkillChainProposer(cfg.env.skill_chain, seed=cfg.seed)
    if cfg.vlm.backend == "template":
        from sarl_dist.vlm.template import TemplateProposer

        return TemplateProposer(seed=cfg.seed)
    raise ValueError(f"vlm.backend: unknown proposer {cfg.vlm.backend!r}")
