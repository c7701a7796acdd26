"""VLA policies behind openpi's interface (vla.base.VLAPolicy), built from the config."""

from __future__ import annotations

from sarl_dist.config import Config
from sarl_dist.vla.base import VLAPolicy


def make_vla(cfg: Config, seed: int) -> VLAPolicy:
    if cfg.vla.kind == "skill_chain":
        from sarl_dist.envs.skill_chain import SkillChainVLA

        return SkillChainVLA(cfg.env.skill_chain, seed=seed)
    raise ValueError(f"vla.kind: unknown VLA {cfg.vla.kind!r}")
