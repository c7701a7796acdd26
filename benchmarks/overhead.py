"""Framework overhead per semantic decision on the skill chain, with 1, 2, ... workers.

Overhead is the time a decision spends outside the environment and the VLA: weight
polling, the Q-ensemble forward, the VLM-service round trip, Ray scheduling. Each
runtime row is compared with a plain single-process loop measured in the same run
(same env, VLA, proposer and Q forward, no Ray), because this machine is noisy, and each
N-worker row with N times the 1-worker row of the same run (the skill chain's steps cost
nothing, so this is the framework's own scaling: a worst case).

    python benchmarks/overhead.py [--episodes 60] [--workers 1 2] [--out bench.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from sarl_dist.config import Config, apply_overrides, build_config, read_yaml
from sarl_dist.core.agent import build_q
from sarl_dist.core.prompt_cache import RESET_ID
from sarl_dist.envs import make_env
from sarl_dist.methods import softmax_choice
from sarl_dist.report.bench import emit
from sarl_dist.runtime.driver import run_training
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.runtime.vlm_service import VLMService
from sarl_dist.vla import make_vla

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "skill_chain.yaml"


def bench_config(workers: int, episodes: int, learning: bool) -> Config:
    overrides = [
        f"runtime.num_workers={workers}",
        f"train.episodes={episodes}",
        f"train.checkpoint_every={episodes}",
        f"eval.every={episodes}",
        "eval.episodes=2",
    ]
    if not learning:
        overrides.append("learner.updates_per_step=0")
    return build_config(apply_overrides(read_yaml(CONFIG), overrides))


def plain_loop(cfg: Config, decisions: int) -> float:
    """Decisions per second of the same work in one process, no Ray."""
    torch.set_num_threads(1)
    env = make_env(cfg)
    vla = make_vla(cfg, 0, env.spec.action_dim)
    vlm = VLMService(cfg, env.spec.task)
    loop = asyncio.new_event_loop()  # the service is an asyncio actor; here it runs in process
    q = build_q(cfg.cache.capacity, cfg.q).eval()
    rng = np.random.default_rng(0)
    done, episode, start = 0, 0, time.perf_counter()
    while done < decisions:
        env.reset(episode)
        episode += 1
        for _ in range(env.spec.max_decisions):
            obs = env.observe()
            ids, texts = loop.run_until_complete(vlm.propose(obs.scene))
            with torch.no_grad():
                values = q(torch.from_numpy(obs.image[None]), torch.from_numpy(obs.proprio[None]))
            pick = softmax_choice(values.mean(0)[0].numpy(), np.asarray(ids), 0.1, rng)
            text = dict(zip(ids, texts, strict=True))[pick]
            result = env.run_reset() if pick == RESET_ID else env.run_prompt(text, vla)
            done += 1
            if result.terminated:
                break
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.workers[0] != 1:
        parser.error("--workers must start at 1 (the scaling baseline)")
    cpus = max(4, os.cpu_count() or 1, 2 * max(args.workers))
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for learning in (False, True):
            for workers in args.workers:
                cfg = bench_config(workers, args.episodes, learning)
                baseline = plain_loop(cfg, 300)
                run = RunDir.create(Path(tmp) / f"w{workers}-{learning}", cfg)
                s = run_training(cfg, run, show_progress=False)
                if workers == 1:
                    one_worker = s["decisions_per_second"]
                rows.append(
                    {
                        "workers": workers,
                        "learner": "training" if learning else "idle",
                        "decisions_per_s": round(s["decisions_per_second"], 1),
                        "plain_loop_decisions_per_s": round(baseline, 1),
                        "ratio_vs_plain_loop": round(s["decisions_per_second"] / baseline, 3),
                        "aggregate_vs_n_x_one": round(
                            s["decisions_per_second"] / (workers * one_worker), 3
                        ),
                        "overhead_ms_p50": round(s["overhead_ms_p50"], 2),
                        "overhead_ms_p95": round(s["overhead_ms_p95"], 2),
                        "staleness_updates_p95": s["staleness_updates_p95"],
                        "worker_wait_ms_p50": round(s["worker_wait_ms_p50"], 2),
                        "worker_wait_ms_p95": round(s["worker_wait_ms_p95"], 2),
                    }
                )
    ray.shutdown()
    emit("skill chain: framework overhead per decision", rows, args.out)


if __name__ == "__main__":
    main()
