"""VLA policies behind openpi's interface (vla.base.VLAPolicy), built from the config."""

from __future__ import annotations

from typing import Any

from sarl_dist.config import Config
from sarl_dist.vla.base import VLAPolicy

SERVABLE = ("skill_chain",)


def make_vla(cfg: Config, seed: int) -> VLAPolicy:
    if cfg.vla.kind == "skill_chain":
        from sarl_dist.envs.skill_chain import SkillChainVLA

        return SkillChainVLA(cfg.env.skill_chain, seed=seed)
    raise ValueError(f"vla.kind: unknown VLA {cfg.vla.kind!r}")


def make_server_policy(name: str, cfg: Config) -> tuple[VLAPolicy, dict[str, Any]]:
    """A policy for `sarl serve-vla`, with the metadata its server announces."""
    if name == "skill_chain":
        from sarl_dist.envs.skill_chain import NUM_SKILLS, SkillChainVLA

        policy = SkillChainVLA(cfg.env.skill_chain, seed=cfg.seed)
        return policy, {"policy": name, "action_dim": NUM_SKILLS, "action_horizon": policy.horizon}
    raise ValueError(f"--policy: unknown policy {name!r}; choose from {', '.join(SERVABLE)}")
