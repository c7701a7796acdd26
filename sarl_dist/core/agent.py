"""SARL's learning rule, readable top to bottom: expected-SARSA over prompts with a
min-over-ensemble target, one Adam step over all members on a shared batch.

    y = r + gamma * (1 - done) * sum_l' pi(l' | s') * min_i Qbar_i(s', l')
    pi = softmax(mean_i Q_i(s', .) / temperature) restricted to A(s')

pi is the behaviour policy itself (the online ensemble mean), which makes the backup the
expectation under the policy that collects the data.

The agent trains on `learner.device`: a sampled batch crosses to it in one transfer per
field, and weights leave it only when published (qnet.weights_to_numpy, CPU NumPy).
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass

import numpy as np
import torch

from sarl_dist.config import LearnerConfig, QConfig
from sarl_dist.core.policy import masked_softmax
from sarl_dist.core.qnet import QEnsemble
from sarl_dist.core.replay import Batch


def resolve_device(name: str) -> torch.device:
    """learner.device as torch's device: auto is cuda only when torch sees a GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("learner.device=cuda, but torch sees no GPU here")
    return torch.device(name)


def build_q(num_prompts: int, cfg: QConfig) -> QEnsemble:
    return QEnsemble(num_prompts, cfg.ensemble, cfg.hidden, cfg.layers, cfg.image_features)


def expected_sarsa_target(
    reward: torch.Tensor,
    done: torch.Tensor,
    q_next_online: torch.Tensor,
    q_next_target: torch.Tensor,
    next_mask: torch.Tensor,
    gamma: float,
    temperature: float,
) -> torch.Tensor:
    """reward, done (B,); q_next_online (E, B, K); q_next_target (E', B, K); next_mask (B, K)."""
    pi = masked_softmax(q_next_online.mean(0), next_mask, temperature)
    value = (pi * q_next_target.min(0).values).sum(-1)
    return reward + gamma * (1.0 - done) * value


@dataclass
class UpdateStats:
    loss: float
    q_mean: float
    target_mean: float


class SARLAgent:
    """The Q-ensemble, its target networks and optimiser (the Learner actor's core)."""

    def __init__(
        self, num_prompts: int, q_cfg: QConfig, cfg: LearnerConfig, gamma: float, seed: int
    ) -> None:
        torch.manual_seed(seed)
        self.cfg, self.gamma, self.num_prompts = cfg, gamma, num_prompts
        self.device = resolve_device(cfg.device)
        self.q = build_q(num_prompts, q_cfg).to(self.device)  # initialised on the CPU: same
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)
        self.updates = 0

    def _tensors(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The batch on the training device, one transfer per field (images stay uint8)."""
        return {
            k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
            for k, v in vars(batch).items()
        }

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        return self._td_target(self._tensors(batch))

    def _td_target(self, t: dict[str, torch.Tensor]) -> torch.Tensor:
        """Only the offered next candidates go through the MLPs; the rest stay masked."""
        mask = t["next_mask"]
        rows, cols = mask.nonzero(as_tuple=True)

        def q_next(net: QEnsemble) -> torch.Tensor:
            dense = torch.zeros(net.members, *mask.shape, device=mask.device)
            state = net.encode(t["next_image"], t["next_proprio"])
            dense[:, rows, cols] = net.q_pairs(state, rows, cols)
            return dense

        return expected_sarsa_target(
            t["reward"],
            t["done"],
            q_next(self.q),
            q_next(self.target),
            mask,
            self.gamma,
            self.cfg.temperature,
        )

    def update(self, batch: Batch) -> UpdateStats:
        t = self._tensors(batch)
        with torch.no_grad():
            y = self._td_target(t)
        rows = torch.arange(len(batch), device=self.device)
        q_sa = self.q.q_pairs(self.q.encode(t["image"], t["proprio"]), rows, t["prompt"])
        loss = ((q_sa - y.unsqueeze(0)) ** 2).mean(1).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.q.clip_grad_norm_per_member_(self.cfg.grad_clip)
        self.opt.step()
        self.updates += 1
        self._update_target()
        return UpdateStats(
            loss.item() / self.q.members, q_sa.detach().mean().item(), y.mean().item()
        )

    @torch.no_grad()
    def _update_target(self) -> None:
        tc = self.cfg.target
        if tc.mode == "hard":
            if self.updates % tc.period == 0:
                self.target.load_state_dict(self.q.state_dict())
            return
        for p_t, p in zip(self.target.parameters(), self.q.parameters(), strict=True):
            p_t.lerp_(p, tc.tau)

    def state_bytes(self) -> bytes:
        """Weights, targets, optimiser and counter, for torch.load(weights_only=True)."""
        buf = io.BytesIO()
        torch.save(
            {
                "q": self.q.state_dict(),
                "target": self.target.state_dict(),
                "opt": self.opt.state_dict(),
                "updates": self.updates,
            },
            buf,
        )
        return buf.getvalue()

    def load_state_bytes(self, data: bytes) -> None:
        state = torch.load(io.BytesIO(data), map_location=self.device, weights_only=True)
        self.q.load_state_dict(state["q"])
        self.target.load_state_dict(state["target"])
        self.opt.load_state_dict(state["opt"])
        self.updates = int(state["updates"])
