"""The prompt cache: SARL's discrete action space.

A prompt's id is its slot, and the Q-ensemble sees it only as one-hot(id), so an id must
mean the same text on every worker and for the whole run: slots are never evicted or
reused, the cache freezes when full, and it is saved with the run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from sarl_dist.prompt_text import (  # noqa: F401 - the cache's vocabulary, used from here too
    MAX_PROMPT_CHARS,
    RESET_PROMPT,
    clean_prompt,
    normalize_prompt,
)

RESET_ID = 0


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

    def admit(self, texts: Iterable[str]) -> tuple[list[int], list[str]]:
        """A proposer's answer as ids: each distinct prompt once, in order, entered if new;
        and the reasons of the ones refused (unusable text, or new to a frozen cache)."""
        ids: list[int] = []
        refused: list[str] = []
        for text in texts:
            try:
                pid = self.add(text)
            except (TypeError, ValueError) as exc:
                refused.append(str(exc))
                continue
            if pid is None:
                refused.append(f"{str(text)[:80]!r} is not in the frozen cache")
            elif pid not in ids:
                ids.append(pid)
        return ids, refused

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
