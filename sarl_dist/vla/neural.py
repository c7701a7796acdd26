"""A neural stand-in for pi0.5, for measuring serving only: a network over the two camera
images, the state and the tokenised prompt, with random weights, that answers openpi's
LIBERO observation with a (10, 7) action chunk. It offers `infer_batch`, so the policy
server can run many workers' requests as one forward pass, as openpi's proposed batched
inference would. Its actions mean nothing: never let it drive an arm.

Its shape is chosen to serve like a large VLA at small batch: each request becomes one
fused vector (pooled image stems, state, mean word embedding), and the body is a stack of
wide residual MLP blocks in bfloat16 (pi0.5 runs in bfloat16; 270M weights at the
defaults), so a forward pass at batch 1 is bound by reading the weights, as a
3B-parameter model's is on a GPU, and a batch of 8 costs little more than one. Measured
on a 2-core AMD EPYC (one torch thread, one 2048 x 8192 layer): batch 1 3.3 ms, batch 8
3.6 ms, so 8 requests one at a time take 7.4x a batch of 8; in float32 that ratio is 2.9
(the batch is compute bound), which is why the body is bfloat16 (docs/performance.md).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import torch
from torch import nn

HORIZON, ACTION_DIM, IMAGE = 10, 7, 224
VOCAB, MAX_TOKENS = 4096, 24


def tokens(prompt: str) -> list[int]:
    """Word ids by hash: the stand-in's tokenizer (stable across processes)."""
    words = prompt.lower().split()[:MAX_TOKENS]
    return [
        int.from_bytes(hashlib.sha256(w.encode()).digest()[:4], "little") % VOCAB for w in words
    ]


class _Net(nn.Module):
    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        pooled = 3 * (IMAGE // 8) ** 2
        self.image = nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(pooled, width))
        self.wrist = nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(pooled, width))
        self.state = nn.Linear(8, width)
        self.words = nn.EmbeddingBag(VOCAB, width, mode="mean", padding_idx=0)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width),
                nn.Linear(width, 4 * width),
                nn.GELU(),
                nn.Linear(4 * width, width),
            )
            for _ in range(blocks)
        )
        self.head = nn.Linear(width, HORIZON * ACTION_DIM)

    def forward(self, image, wrist, state, words) -> torch.Tensor:
        def pixels(x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 3, 1, 2).to(torch.bfloat16).div(255.0)

        h = self.image(pixels(image)) + self.wrist(pixels(wrist))
        h = h + self.state(state.to(torch.bfloat16))
        h = h + self.words(words)
        for block in self.blocks:
            h = h + block(h)
        return torch.tanh(self.head(h)).reshape(-1, HORIZON, ACTION_DIM)


class NeuralStandIn:
    """openpi BasePolicy-compatible (`infer`, `reset`), plus `infer_batch`."""

    def __init__(
        self,
        seed: int = 0,
        width: int = 2048,
        blocks: int = 8,
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        torch.manual_seed(seed)
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        with self.device:  # built where it runs: a wide net never passes through host memory
            self.net = _Net(width, blocks).to(torch.bfloat16).eval()

    def reset(self) -> None:
        pass

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        return self.infer_batch([obs])[0]

    def infer_batch(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One forward pass for several observations; one reply each, in order."""
        start = time.perf_counter()
        words = torch.zeros(len(batch), MAX_TOKENS, dtype=torch.long)
        for i, obs in enumerate(batch):
            ids = tokens(str(obs.get("prompt", "")))
            words[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        inputs = (
            _stack(batch, "observation/image", (IMAGE, IMAGE, 3), np.uint8),
            _stack(batch, "observation/wrist_image", (IMAGE, IMAGE, 3), np.uint8),
            _stack(batch, "observation/state", (8,), np.float32),
            words,
        )
        with torch.inference_mode():
            actions = self.net(*(x.to(self.device) for x in inputs)).float().cpu().numpy()
        ms = 1e3 * (time.perf_counter() - start)
        return [{"actions": a, "policy_timing": {"infer_ms": ms}} for a in actions]


def example(seed: int, prompt: str = "put the bowl on the plate") -> dict[str, Any]:
    """A LIBERO observation as openpi's client sends it (random pixels and state)."""
    rng = np.random.default_rng(seed)
    return {
        "observation/image": rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8),
        "observation/state": rng.standard_normal(8).astype(np.float32),
        "prompt": prompt,
    }


def _stack(batch: list[dict], key: str, shape: tuple[int, ...], dtype) -> torch.Tensor:
    """The batch's arrays under `key`, refused (ValueError) when one has another shape."""
    arrays = [np.asarray(obs.get(key), dtype=dtype) for obs in batch]
    for a in arrays:
        if a.shape != shape:
            raise ValueError(f"{key} of shape {a.shape}; the neural stand-in takes {shape}")
    return torch.from_numpy(np.stack(arrays))
