"""The Q-ensemble: E independent Q(s, l) networks.

Each member is SARL's network: a small CNN on the 64x64 RGB image, the 8-d proprio and
one-hot(K) of the prompt, through an MLP of `layers` x `hidden` to one scalar. The MLPs
of all members run as batched matmuls. Because the prompt enters the first layer only
through one-hot(l), that layer is W_s [features, proprio] + W_l[:, l]: the state part is
computed once per state, and any set of (state, prompt) pairs (all K for acting, only
the offered candidates for a target) costs just the small MLP. This is exactly the
one-hot network, not an approximation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from sarl_dist.observation import PROPRIO_DIM


class EnsembleLinear(nn.Module):
    """E independent linear layers applied to x of shape (E, B, in)."""

    def __init__(self, members: int, fan_in: int, fan_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def _member_cnn() -> nn.Sequential:
    # 64 -> 16 -> 7 -> 5, each convolution followed by a ReLU.
    return nn.Sequential(
        nn.Conv2d(3, 16, kernel_size=4, stride=4),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, stride=2),
        nn.ReLU(),
        nn.Conv2d(32, 32, kernel_size=3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
    )


CNN_FEATURES = 32 * 5 * 5


class QEnsemble(nn.Module):
    def __init__(
        self,
        num_prompts: int,
        members: int = 10,
        hidden: int = 128,
        layers: int = 3,
        image_features: int = 64,
    ) -> None:
        super().__init__()
        self.members, self.num_prompts, self.hidden = members, num_prompts, hidden
        self.cnns = nn.ModuleList(_member_cnn() for _ in range(members))
        self.features = EnsembleLinear(members, CNN_FEATURES, image_features)
        self.state_in = EnsembleLinear(members, image_features + PROPRIO_DIM, hidden)
        bound = 1.0 / math.sqrt(image_features + PROPRIO_DIM + num_prompts)
        self.prompt_in = nn.Parameter(
            torch.empty(members, num_prompts, hidden).uniform_(-bound, bound)
        )
        self.body = nn.ModuleList(
            EnsembleLinear(members, hidden, hidden) for _ in range(layers - 1)
        )
        self.head = EnsembleLinear(members, hidden, 1)

    def encode(self, image: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """The state's share of the first MLP layer: (B, 64, 64, 3) uint8, (B, 8) -> (E, B, H)."""
        x = image.permute(0, 3, 1, 2).float().div_(255.0)
        x = torch.relu(self.features(self._cnn_features(x)))
        proprio = proprio.float().unsqueeze(0).expand(self.members, -1, -1)
        return self.state_in(torch.cat([x, proprio], dim=-1))

    def _cnn_features(self, x: torch.Tensor) -> torch.Tensor:
        """The members' CNNs -> (E, B, F). On a batch (learning) each member runs its own
        convolutions: on CPU that is twice as fast as grouped ones at batch 64-128, backward
        too. On one state (acting) the per-call cost dominates, so the ten CNNs run as three
        convolutions (the first shared, the others grouped by member): 3x faster, the same
        numbers."""
        if x.shape[0] > 1:
            return torch.stack([cnn(x) for cnn in self.cnns])
        h = x
        for i, conv in enumerate(self.cnns[0]):
            if isinstance(conv, nn.Conv2d):
                weight = torch.cat([cnn[i].weight for cnn in self.cnns])
                bias = torch.cat([cnn[i].bias for cnn in self.cnns])
                groups = 1 if h is x else self.members
                h = torch.relu(nn.functional.conv2d(h, weight, bias, conv.stride, groups=groups))
        return h.reshape(x.shape[0], self.members, -1).transpose(0, 1)

    def q_pairs(
        self, state: torch.Tensor, rows: torch.Tensor, prompts: torch.Tensor
    ) -> torch.Tensor:
        """Q for (state rows[n], prompt prompts[n]) pairs, from `encode` output -> (E, N)."""
        h = torch.relu(state[:, rows] + self.prompt_in[:, prompts])
        for layer in self.body:
            h = torch.relu(layer(h))
        return self.head(h).squeeze(-1)

    def clip_grad_norm_per_member_(self, max_norm: float) -> torch.Tensor:
        """Scale each member's gradient to norm at most max_norm, each on its own (one
        member's spike must not shrink the other members' steps, as one global norm would);
        returns the members' norms before clipping. A member owns its CNN and its slice
        (index 0) of every stacked parameter."""
        stacked = [p for name, p in self.named_parameters() if not name.startswith("cnns.")]
        squares = torch.zeros(self.members, device=self.prompt_in.device)
        for p in stacked:
            if p.grad is not None:
                squares += p.grad.detach().pow(2).flatten(1).sum(1)
        for i, cnn in enumerate(self.cnns):
            for p in cnn.parameters():
                if p.grad is not None:
                    squares[i] += p.grad.detach().pow(2).sum()
        norms = squares.sqrt()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p in stacked:
            if p.grad is not None:
                p.grad.mul_(scale.view(-1, *[1] * (p.dim() - 1)))
        for i, cnn in enumerate(self.cnns):
            for p in cnn.parameters():
                if p.grad is not None:
                    p.grad.mul_(scale[i])
        return norms

    def forward(self, image: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """Q for every prompt -> (E, B, K)."""
        b, k = image.shape[0], self.num_prompts
        rows = torch.arange(b, device=image.device).repeat_interleave(k)
        prompts = torch.arange(k, device=image.device).repeat(b)
        return self.q_pairs(self.encode(image, proprio), rows, prompts).reshape(-1, b, k)


def weights_to_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_numpy_weights(module: nn.Module, weights: dict[str, np.ndarray]) -> None:
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
