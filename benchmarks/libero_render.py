"""Low-level steps per second of one LIBERO worker: render on demand vs every step.

    python benchmarks/libero_render.py [--steps 600] [--task 0]

On demand is how the project's LiberoEnv runs (cameras rendered once per decision, for
the Q image and the VLM's scene). The baseline renders both 256 px cameras at every
step, as openpi's LIBERO example loop does by reading them from every observation. Both
drive the same skill VLA in the same process, measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sarl_dist.config import load_config
from sarl_dist.envs import make_env
from sarl_dist.envs.libero import ORACLE_PROMPTS
from sarl_dist.report.bench import emit
from sarl_dist.vla.base import ChunkedVLA
from sarl_dist.vla.skill import SkillVLA

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "libero10.yaml"


def run(env, steps: int, every_step: bool) -> float:
    """Steps per second over `steps` low-level steps of the oracle prompts."""
    step = env.step
    if every_step:

        def rendering_step(action):
            step(action)
            env.render("agentview", 256)
            env.render("robot0_eye_in_hand", 256)

        env.step = rendering_step
    vla = ChunkedVLA(SkillVLA(seed=0), 5, 7)
    prompts = ORACLE_PROMPTS[env.spec.task]
    done, episode, start = 0, 0, time.perf_counter()
    while done < steps:
        env.reset(episode)
        episode += 1
        for prompt in prompts:
            env.observe()
            result = env.run_prompt(prompt, vla)
            done += result.steps
            if result.terminated or done >= steps:
                break
    if every_step:
        del env.step
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--task", type=int, default=0)
    args = parser.parse_args()
    env = make_env(load_config(CONFIG, [f"env.task={args.task}"]))
    run(env, 50, False)  # warm-up
    on_demand = run(env, args.steps, False)
    every = run(env, max(60, args.steps // 10), True)
    row = {
        "task": args.task,
        "renderer": env.renderer,
        "steps_per_s_render_on_demand": round(on_demand, 1),
        "steps_per_s_render_every_step": round(every, 1),
        "ratio": round(on_demand / every, 2),
    }
    emit("one LIBERO worker, low-level steps per second", [row], result=row)


if __name__ == "__main__":
    main()
