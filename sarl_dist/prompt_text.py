"""Prompt text: what counts as the same prompt, and what a prompt may be.

A leaf of the package: the config checks seed prompts with it, the prompt cache keys its
slots with it, and every VLA and proposer compares prompts the same way.
"""

from __future__ import annotations

import re

RESET_PROMPT = "reset to home"
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
