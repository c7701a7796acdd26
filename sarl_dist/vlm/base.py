"""The proposer interface: image + task + cache state -> candidate prompts.

Backends (the skill-chain test bed's proposer, templates, Gemini, an OpenAI-compatible
server) differ only in how they answer; the VLMService actor turns answers into prompt
ids. History travels in the request for the VLM-only baseline; SARL leaves it empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


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


@runtime_checkable
class Proposer(Protocol):
    def propose(self, request: ProposalRequest) -> list[str]: ...
