"""The proposer interface: image + task + cache state -> candidate prompts.

Backends (the skill-chain test bed's proposer, templates, Gemini, an OpenAI-compatible
server) differ only in how they answer; the VLMService actor turns answers into prompt
ids. Offline proposers answer at once (`propose`); remote ones are awaited (`ask`) so
the service can keep many queries in flight. History travels in the request for the
VLM-only baseline; SARL leaves it empty.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from sarl_dist.prompt_text import normalize_prompt


@dataclass(frozen=True)
class HistoryItem:
    prompt: str
    image: np.ndarray


def image_digest(image: np.ndarray) -> str:
    """Identifies a frame exactly (shape and pixels)."""
    h = hashlib.sha256(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()[:24]


def png_bytes(image: np.ndarray) -> bytes:
    """The frame as PNG: lossless, and what both remote APIs accept as an image part."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


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


@dataclass(frozen=True)
class Answer:
    """A backend's candidates, with what producing them cost."""

    prompts: tuple[str, ...]
    tokens_in: int = 0
    tokens_out: int = 0
    repaired: int = 0  # choices mapped back onto the frozen cache (wrong index, right text)
    rejected: int = 0  # choices naming nothing in the frozen cache, dropped


# What a remote VLM answers to a bad key, an unknown model or a request it cannot serve:
# retrying the same query will not help, and answering from the cache would hide it.
REFUSALS = frozenset({"http_400", "http_401", "http_403", "http_404"})


class VLMUnusableError(RuntimeError):
    """The VLM refuses the run's queries (a bad key, an unknown model) or cannot be reached
    before the run starts: a run must not go on answering every query from its cache."""


class ProposalError(RuntimeError):
    """A query that produced no usable answer; `kind` is what the meters count it under."""

    def __init__(self, kind: str, message: str, tokens: tuple[int, int] = (0, 0)) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.tokens = kind, tokens


@runtime_checkable
class Proposer(Protocol):
    """An offline proposer: answers at once, no network."""

    def propose(self, request: ProposalRequest) -> list[str]: ...


@runtime_checkable
class RemoteProposer(Protocol):
    """A remote VLM: awaited, may fail with ProposalError, reports tokens."""

    async def ask(self, request: ProposalRequest) -> Answer: ...
