"""SARL's behaviour policy as the learner's target sees it: softmax of the ensemble mean of
Q over the candidate prompts A(s) only (the workers' sampling of it: sarl_dist/methods.py).
A prompt the VLM did not offer for a state gets no mass, whatever its Q.
"""

from __future__ import annotations

import torch


def masked_softmax(q: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(q / temperature) restricted to mask; rows with no candidate give all zeros."""
    logits = (q / temperature).masked_fill(~mask, float("-inf"))
    has_any = mask.any(dim=-1, keepdim=True)
    logits = torch.where(has_any, logits, torch.zeros_like(logits))
    return torch.softmax(logits, dim=-1) * has_any
