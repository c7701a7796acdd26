"""Replay of semantic transitions (s, l, r, done, s', A(s')).

Storing the next candidate set as a K-wide mask lets the expected-SARSA target be
computed at any later time without asking the VLM again. Images stay uint8.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from sarl_dist.observation import IMAGE_SIZE, PROPRIO_DIM


@dataclass
class Batch:
    image: np.ndarray  # (B, 64, 64, 3) uint8
    proprio: np.ndarray  # (B, 8) float32
    prompt: np.ndarray  # (B,) int64
    reward: np.ndarray  # (B,) float32
    done: np.ndarray  # (B,) float32, 1 only on termination (not on the episode cap)
    next_image: np.ndarray
    next_proprio: np.ndarray
    next_mask: np.ndarray  # (B, K) bool: the candidates offered at s'

    def __len__(self) -> int:
        return len(self.prompt)

    @classmethod
    def concat(cls, parts: list[Batch]) -> Batch:
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )


def _specs(num_prompts: int) -> dict[str, tuple[tuple[int, ...], type]]:
    img = (IMAGE_SIZE, IMAGE_SIZE, 3)
    return {
        "image": (img, np.uint8),
        "proprio": ((PROPRIO_DIM,), np.float32),
        "prompt": ((), np.int64),
        "reward": ((), np.float32),
        "done": ((), np.float32),
        "next_image": (img, np.uint8),
        "next_proprio": ((PROPRIO_DIM,), np.float32),
        "next_mask": ((num_prompts,), np.bool_),
    }


class ReplayBuffer:
    """A fixed-capacity ring; the oldest transitions go first once it is full."""

    def __init__(self, capacity: int, num_prompts: int) -> None:
        self.capacity, self.num_prompts = capacity, num_prompts
        self._data = {
            name: np.zeros((capacity, *shape), dtype=dtype)
            for name, (shape, dtype) in _specs(num_prompts).items()
        }
        self._next = 0
        self.size = 0
        self.added = 0  # all transitions ever stored, including those overwritten

    def __len__(self) -> int:
        return self.size

    def add(self, batch: Batch) -> None:
        n = len(batch)
        if batch.next_mask.shape[1:] != (self.num_prompts,):
            raise ValueError(
                f"next_mask has width {batch.next_mask.shape[1:]}, the cache has {self.num_prompts}"
            )
        blind = np.flatnonzero((batch.done == 0) & ~batch.next_mask.any(axis=1))
        if blind.size:  # its target would be silently r + 0
            raise ValueError(
                f"transitions {blind.tolist()} are not terminal but offer no next candidates "
                "to bootstrap from"
            )
        idx = (self._next + np.arange(n)) % self.capacity
        for name, arr in self._data.items():
            arr[idx] = getattr(batch, name)
        self._next = int((self._next + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)
        self.added += n

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=batch_size)
        return Batch(**{name: arr[idx] for name, arr in self._data.items()})

    def to_bytes(self) -> bytes:
        """The buffer as a NumPy archive (no pickle), built in memory so that writing it is
        one write that either lands or fails whole."""
        arrays = {name: arr[: self.size] for name, arr in self._data.items()}
        meta = np.array([self.capacity, self.num_prompts, self._next, self.size, self.added])
        buf = io.BytesIO()
        np.savez(buf, _meta=meta, **arrays)
        return buf.getvalue()

    @classmethod
    def load(cls, path: str | Path) -> ReplayBuffer:
        with np.load(path, allow_pickle=False) as data:
            capacity, num_prompts, nxt, size, added = (int(v) for v in data["_meta"])
            buf = cls(capacity, num_prompts)
            for name, arr in buf._data.items():
                arr[:size] = data[name]
        buf._next, buf.size, buf.added = nxt, size, added
        return buf
