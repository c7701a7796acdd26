"""Shared helpers for tests and benchmarks: small configs and hand-made transitions.

Nothing here is used by the product path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sarl_dist.config import Config, apply_overrides, build_config
from sarl_dist.core.replay import Batch

FAST: dict[str, Any] = {
    "q": {"ensemble": 2, "hidden": 32, "image_features": 16},
    "learner": {"batch_size": 16, "warmup": 8, "updates_per_step": 1.0, "publish_every": 5},
    "runtime": {"num_workers": 2, "worker_cpus": 0.5, "learner_cpus": 0.5, "vlm_cpus": 0.25},
    "train": {"episodes": 8, "checkpoint_every": 4},
    "eval": {"every": 4, "episodes": 4},
}


def tiny_config(*overrides: str, base: dict[str, Any] | None = None) -> Config:
    """A config that runs the full loop in seconds; overrides as `a.b=value`."""
    return build_config(apply_overrides(base if base is not None else FAST, list(overrides)))


def image_of(value: int) -> np.ndarray:
    """A flat 64x64 image: distinct values make distinct, learnable states."""
    return np.full((64, 64, 3), value, dtype=np.uint8)


def make_batch(
    states: list[int],
    prompts: list[int],
    rewards: list[float],
    dones: list[float],
    next_states: list[int],
    next_candidates: list[list[int]],
    num_prompts: int,
) -> Batch:
    """Transitions between flat-image states, with explicit next candidate sets."""
    n = len(states)
    mask = np.zeros((n, num_prompts), dtype=bool)
    for i, cands in enumerate(next_candidates):
        mask[i, cands] = True
    return Batch(
        image=np.stack([image_of(s) for s in states]),
        proprio=np.zeros((n, 8), np.float32),
        prompt=np.asarray(prompts, np.int64),
        reward=np.asarray(rewards, np.float32),
        done=np.asarray(dones, np.float32),
        next_image=np.stack([image_of(s) for s in next_states]),
        next_proprio=np.zeros((n, 8), np.float32),
        next_mask=mask,
    )
