"""LIBERO throughput: a worker inside the runtime against a plain loop, and N workers.

    python benchmarks/libero_throughput.py [--episodes 6] [--workers 1 2] [--out f.json]

Every row does the same work: LIBERO-10 task 0 under its fixed atomic prompt sequence
(method=oracle: no learning, no VLM queries), the skill VLA served over openpi's
websocket protocol, cameras rendered on demand. The plain loop steps the same
environment class with the same served VLA and the same prompts in this one process, no
Ray. Reported: low-level steps per second; the runtime's ratio to the plain loop (target
>= 0.9) and, for N workers, aggregate steps per second against N times one worker
(target >= 0.85), each measured in this run because the machine is noisy.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray

from sarl_dist.config import Config, load_config
from sarl_dist.envs import atomic_prompts, make_env
from sarl_dist.report.bench import emit
from sarl_dist.runtime.driver import run_training
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.runtime.vla_server import VLAServer
from sarl_dist.vla import make_vla

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "libero10.yaml"


def bench_config(workers: int, episodes: int) -> Config:
    return load_config(
        CONFIG,
        [
            "method=oracle",
            f"runtime.num_workers={workers}",
            f"train.episodes={episodes}",
            f"train.checkpoint_every={episodes}",
            f"eval.every={episodes}",
            "eval.episodes=1",
        ],
    )


def plain_loop(cfg: Config, episodes: int) -> float:
    """Low-level steps per second of the same episodes in this process."""
    server = VLAServer(cfg)
    env = make_env(cfg)
    vla = make_vla(cfg, 0, 7, [server.address()])
    prompts = atomic_prompts(cfg)
    steps, start = 0, time.perf_counter()
    for episode in range(episodes):
        env.reset(episode)
        for t in range(env.spec.max_decisions):
            env.observe()  # the Q image a worker renders at every decision
            result = env.run_prompt(prompts[min(t, len(prompts) - 1)], vla)
            steps += result.steps
            if result.terminated:
                break
    seconds = time.perf_counter() - start
    env.close()
    server.stop()
    return steps / seconds


def runtime(cfg: Config, tmp: Path) -> float:
    """Low-level steps per second of the training phases of a run."""
    run = RunDir.create(tmp / f"w{cfg.runtime.num_workers}", cfg)
    summary = run_training(cfg, run, show_progress=False)
    steps = sum(e["steps"] for e in run.read_jsonl("episodes.jsonl"))
    train_seconds = summary["decisions"] / summary["decisions_per_second"]
    return steps / train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=6, help="Episodes per worker.")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain = plain_loop(bench_config(1, args.episodes), args.episodes)
        one = None
        for n in args.workers:
            rate = runtime(bench_config(n, args.episodes * n), Path(tmp))
            one = rate if n == 1 else one
            rows.append(
                {
                    "workers": n,
                    "steps_per_s": round(rate, 1),
                    "plain_loop_steps_per_s": round(plain, 1),
                    "ratio_vs_plain_loop": round(rate / plain, 3) if n == 1 else None,
                    "scaling_vs_n_x_one": round(rate / (n * one), 3) if one else None,
                }
            )
    ray.shutdown()
    result = {"cores": os.cpu_count(), "rows": rows}
    emit(f"LIBERO throughput ({os.cpu_count()} cores)", rows, args.out, result)


if __name__ == "__main__":
    main()
