"""SARL's behaviour and evaluation policies over the current candidate prompts A(s).

Both act on the ensemble mean of Q and only ever put mass on candidates: a prompt the
VLM did not offer for this state is never chosen, whatever its Q.
"""

from __future__ import annotations

import numpy as np
import torch


def masked_softmax(q: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(q / temperature) restricted to mask; rows with no candidate give all zeros."""
    logits = (q / temperature).masked_fill(~mask, float("-inf"))
    has_any = mask.any(dim=-1, keepdim=True)
    logits = torch.where(has_any, logits, torch.zeros_like(logits))
    return torch.softmax(logits, dim=-1) * has_any


def softmax_choice(
    q: np.ndarray, candidates: np.ndarray, temperature: float, rng: np.random.Generator
) -> int:
    """Sample one candidate id with probability softmax(q[c] / temperature)."""
    logits = q[candidates].astype(np.float64) / temperature
    p = np.exp(logits - logits.max())
    return int(candidates[rng.choice(len(candidates), p=p / p.sum())])


def greedy_choice(q: np.ndarray, candidates: np.ndarray) -> int:
    return int(candidates[int(np.argmax(q[candidates]))])


def uniform_choice(candidates: np.ndarray, rng: np.random.Generator) -> int:
    return int(candidates[rng.integers(len(candidates))])
