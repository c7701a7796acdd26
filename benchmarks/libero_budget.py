"""Where one LIBERO worker's time goes, per decision, and the cost of robosuite's repeated
mj_forward.

    python benchmarks/libero_budget.py [--episodes 6] [--inits 5] [--tasks 0 1 ...]
                                       [--out f.json]

1. The budget: a SARL run on LIBERO-10 task 0 with the embedded defaults (the skill VLA
   served over openpi's websocket protocol, the template proposer, a training Learner),
   one worker, `runtime.mode: local` so nothing else shares the worker's core. Each
   episode's rollout loop times its parts (core/rollout.py): physics, observe (cameras
   and state), VLA round trips, Q forward, VLM, and the rest; summary.json's
   `decision_ms` is the per-decision average, reported here with each item's share.
2. The largest item, physics: each physics substep robosuite computes mj_forward twice on
   the same state (its step loop, then the arm controller's update). The atomic sequence
   of each task from the first `--inits` fixed init states, with the repeat skipped
   (envs/libero.OnceForward, the default) and as robosuite ships it
   (`libero.stock_stepping`), interleaved: low-level steps per second, ratio to the stock
   stepping measured in the same run, and the successes of each (the skip changes only
   the constraint solver's warm start).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sarl_dist.config import load_config
from sarl_dist.envs import atomic_prompts, make_env
from sarl_dist.report.bench import emit
from sarl_dist.runtime.driver import run_training
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.vla.base import ChunkedVLA
from sarl_dist.vla.skill import SkillVLA

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "libero10.yaml"


def budget(episodes: int) -> list[dict]:
    """Per-decision milliseconds of each item over a local SARL run's training episodes."""
    cfg = load_config(
        CONFIG,
        [
            "runtime.mode=local",
            "runtime.num_workers=1",
            f"train.episodes={episodes}",
            f"train.checkpoint_every={episodes}",
            f"eval.every={episodes}",
            "eval.at_start=false",
            "eval.episodes=1",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_training(cfg, RunDir.create(Path(tmp) / "run", cfg), show_progress=False)
    total = sum(summary["decision_ms"].values())
    return [
        {"item": item, "ms_per_decision": ms, "share": round(ms / total, 3)}
        for item, ms in sorted(summary["decision_ms"].items(), key=lambda kv: -kv[1])
    ]


def episode(env, prompts, seed: int, init: int) -> tuple[int, bool, float]:
    """The task's atomic sequence from init state `init`: steps, success, seconds stepping."""
    env.reset(0, init_index=init)
    vla, steps, seconds = ChunkedVLA(SkillVLA(seed=seed), 5, 7), 0, 0.0
    for prompt in prompts:
        result = env.run_prompt(prompt, vla)
        steps, seconds = steps + result.steps, seconds + result.env_seconds
        if result.terminated:
            return steps, True, seconds
    return steps, False, seconds


def repeated_forward(tasks: list[int], inits: int) -> list[dict]:
    rows = []
    for task in tasks:
        cfgs = {
            stock: load_config(CONFIG, [f"env.task={task}", f"env.libero.stock_stepping={stock}"])
            for stock in (False, True)
        }
        envs = {stock: make_env(cfg) for stock, cfg in cfgs.items()}
        prompts = atomic_prompts(cfgs[False])
        tally = {stock: [0, 0, 0.0] for stock in envs}  # steps, successes, seconds
        for init in range(inits):
            for stock, env in envs.items():
                for i, value in enumerate(episode(env, prompts, task, init)):
                    tally[stock][i] += value
        for env in envs.values():
            env.close()
        (steps, ok, seconds), (stock_steps, stock_ok, stock_seconds) = tally[False], tally[True]
        rows.append(
            {
                "task": task,
                "steps_per_s": round(steps / seconds, 1),
                "stock_steps_per_s": round(stock_steps / stock_seconds, 1),
                "ratio_vs_stock": round((steps / seconds) / (stock_steps / stock_seconds), 3),
                "successes": ok,
                "stock_successes": stock_ok,
                "episodes": inits,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=6, help="SARL training episodes.")
    parser.add_argument("--inits", type=int, default=5, help="Init states per task.")
    parser.add_argument("--tasks", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    start = time.perf_counter()
    items = budget(args.episodes)
    emit("One LIBERO worker's time per decision (task 0, SARL, local mode)", items)
    rows = repeated_forward(args.tasks, args.inits)
    result = {
        "cores": os.cpu_count(),
        "budget": items,
        "repeated_forward": rows,
        "seconds": round(time.perf_counter() - start),
    }
    emit("Physics: one mj_forward per substep against robosuite's two", rows, args.out, result)


if __name__ == "__main__":
    main()
