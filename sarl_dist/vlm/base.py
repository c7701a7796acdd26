"""The proposer interface: image + task + cache state -> candidate prompts.

Backends (the skill-chain test bed's proposer, templates, Gemini, an OpenAI-compatible
server) differ only in how they answer; the VLMService actor turns answers into prompt
ids. History travels in the request for the VLM-only baseline; SARL leaves it empty.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from sarl_dist.core.prompt_cache import normalize_prompt


@dataclass(frozen=True)
class HistoryItem:
    prompt: str
    image: np.ndarray


@dataclass(frozen=True)
class ProposalRequest:
    task: str
    image: np.ndarray  # the current scene (agentview), uint8 HxWx3
    cached_prompts: tuple[str, ...]  # slot order: index i is prompt id i
    frozen: bool  # when True, answers must come from cached_prompts
    n: int  # candidates wanted
    history: tuple[HistoryItem, ...] = field(default=())

    def allowed(self, texts: list[str]) -> list[str]:
        """The texts an answer may contain: all of them, or only cached ones once frozen."""
        if not self.frozen:
            return list(texts)
        known = {normalize_prompt(p) for p in self.cached_prompts}
        return [t for t in texts if normalize_prompt(t) in known]

    def scene_rng(self, seed: int) -> np.random.Generator:
        """Randomness fixed by the scene image: the same frame gets the same candidates."""
        digest = hashlib.sha256(self.image.tobytes()).digest()
        return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


@runtime_checkable
class Proposer(Protocol):
    def propose(self, request: ProposalRequest) -> list[str]: ...
