"""Learner gradient steps per second on each `learner.device` asked for: the SARL agent of
the LIBERO config (10-member ensemble, batch 64) on replayed random transitions.

    python benchmarks/learner_device.py [--devices cpu cuda] [--steps 50] [--out bench.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from sarl_dist.config import load_config
from sarl_dist.core.agent import SARLAgent
from sarl_dist.core.replay import ReplayBuffer
from sarl_dist.report.bench import emit
from sarl_dist.testing import make_batch

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "libero10.yaml"


def updates_per_second(device: str, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    cfg = load_config(CONFIG, [f"learner.device={device}"])
    k, rng = cfg.cache.capacity, np.random.default_rng(0)
    n = 1024
    candidates = [list(rng.choice(k, 5, replace=False)) for _ in range(n)]
    replay = ReplayBuffer(n, k)
    replay.add(
        make_batch(
            list(rng.integers(0, 256, n)),
            list(rng.integers(0, k, n)),
            list(rng.random(n)),
            list((rng.random(n) < 0.05).astype(float)),
            list(rng.integers(0, 256, n)),
            candidates,
            k,
        )
    )
    agent = SARLAgent(k, cfg.q, cfg.learner, cfg.gamma, cfg.seed)
    batches = [replay.sample(cfg.learner.batch_size, rng) for _ in range(steps + 5)]
    for batch in batches[:5]:  # warm-up (cuDNN autotuning, allocator)
        agent.update(batch)
    start = time.perf_counter()
    for batch in batches[5:]:
        loss = agent.update(batch).loss  # .item(): the step has finished on the device
    seconds = time.perf_counter() - start
    return {
        "device": str(agent.device),
        "torch_threads": threads,
        "batch_size": cfg.learner.batch_size,
        "ensemble": cfg.q.ensemble,
        "updates_per_s": round(steps / seconds, 2),
        "ms_per_update": round(1e3 * seconds / steps, 1),
        "last_loss": round(loss, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu"], help="learner.device values.")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads.")
    parser.add_argument("--out", type=Path, help="Also write the JSON here.")
    args = parser.parse_args()
    rows = [updates_per_second(d, args.steps, args.threads) for d in args.devices]
    emit("Learner gradient steps per second", rows, args.out)


if __name__ == "__main__":
    main()
