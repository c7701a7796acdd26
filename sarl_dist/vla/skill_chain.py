"""The skill chain's VLA: an openpi-style policy that "understands" the canonical skill
names (effort p_canonical) and one known paraphrase each (p_paraphrase); anything else,
the compound task sentence included, is misgrounded to a skill picked by a hash of the
text (stable across processes)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from sarl_dist.config import SkillChainConfig
from sarl_dist.prompt_text import normalize_prompt
from sarl_dist.skill_chain import CANON, NUM_SKILLS, PARAPHRASES


class SkillChainVLA:
    """openpi BasePolicy-compatible; chunks of `horizon` effort vectors."""

    def __init__(self, cfg: SkillChainConfig, seed: int = 0, horizon: int = 10) -> None:
        self.cfg, self.horizon = cfg, horizon
        self._rng = np.random.default_rng(seed)

    def ground(self, prompt: str) -> tuple[int, float]:
        """(skill, effort) a prompt elicits: names well, paraphrases poorly, the rest wrongly."""
        key = normalize_prompt(prompt)
        if key in CANON:
            return CANON[key], self.cfg.p_canonical
        if key in PARAPHRASES:
            return PARAPHRASES[key], self.cfg.p_paraphrase
        digest = hashlib.sha256(key.encode()).digest()
        return digest[0] % NUM_SKILLS, self.cfg.p_canonical

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        skill, effort = self.ground(str(obs["prompt"]))
        actions = self._rng.normal(0.0, 0.01, size=(self.horizon, NUM_SKILLS)).astype(np.float32)
        actions[:, skill] += effort
        return {"actions": actions}

    def reset(self) -> None:
        pass
