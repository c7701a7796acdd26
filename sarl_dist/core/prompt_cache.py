"""The prompt cache: SARL's discrete action space.

A prompt's id is its slot, and the Q-ensemble sees it only as one-hot(id), so an id must
mean the same text on every worker and for the whole run: slots are never evicted or
reused, the cache freezes when full, and it is saved with the run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

RESET_PROMPT = "reset to home"
RESET_ID = 0
MAX_PROMPT_CHARS = 512

_SPACE = re.compile(r"\s+")
_TRAILING = ".,;:!?"


def normalize_prompt(text: str) -> str:
    """The de-duplication key: case, inner whitespace and trailing punctuation do not count."""
    return _SPACE.sub(" ", text).strip().rstrip(_TRAILING).strip().lower()


def clean_prompt(text: str) -> str:
    """The text kept for a new slot (and sent to the VLA): whitespace tidied, case kept."""
    if not isinstance(text, str):
        raise TypeError(f"a prompt must be a string, not {type(text).__name__}")
    cleaned = _SPACE.sub(" ", text).strip()
    if not normalize_prompt(cleaned):
        raise ValueError("a prompt must contain words, got an empty one")
    if len(cleaned) > MAX_PROMPT_CHARS:
        raise ValueError(f"a prompt is at most {MAX_PROMPT_CHARS} characters, got {len(cleaned)}")
    return cleaned


class PromptCache:
    """K fixed slots; slot 0 is reset-to-home."""

    def __init__(self, capacity: int, texts: Iterable[str] = ()) -> None:
        if capacity < 2:
            raise ValueError(f"cache capacity must be at least 2, got {capacity}")
        self.capacity = capacity
        self._texts: list[str] = []
        self._ids: dict[str, int] = {}
        self.add(RESET_PROMPT)
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def frozen(self) -> bool:
        return len(self._texts) >= self.capacity

    @property
    def texts(self) -> list[str]:
        return list(self._texts)

    def text(self, prompt_id: int) -> str:
        return self._texts[prompt_id]

    def lookup(self, text: str) -> int | None:
        return self._ids.get(normalize_prompt(text))

    def add(self, text: str) -> int | None:
        """The id of `text`, entering it if new; None when new and the cache is frozen."""
        cleaned = clean_prompt(text)
        key = normalize_prompt(cleaned)
        if key in self._ids:
            return self._ids[key]
        if self.frozen:
            return None
        self._ids[key] = len(self._texts)
        self._texts.append(cleaned)
        return self._ids[key]

    def digest(self) -> str:
        """Identifies the cache's contents (part of a proposal's cache key)."""
        return hashlib.sha256("\n".join(self._texts).encode()).hexdigest()[:16]

    def state(self) -> dict:
        return {"capacity": self.capacity, "texts": self.texts}

    @classmethod
    def from_state(cls, state: dict) -> PromptCache:
        texts = list(state["texts"])
        if not texts or normalize_prompt(texts[0]) != normalize_prompt(RESET_PROMPT):
            raise ValueError("a saved prompt cache must start with the reset-to-home slot")
        cache = cls(int(state["capacity"]), texts[1:])
        if cache.texts != texts:
            raise ValueError("a saved prompt cache holds duplicate or invalid prompts")
        return cache

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.state(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> PromptCache:
        return cls.from_state(json.loads(Path(path).read_text()))
