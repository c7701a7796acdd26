"""The skill VLA on every LIBERO-10 task: the task sentence alone vs the atomic sequence.

    python benchmarks/skill_vla_table.py [--episodes 20] [--tasks 0 1 ...] [--out table.json]

Each task runs `sarl probe` twice (zero-shot: the task sentence at every decision;
oracle: envs.libero.ORACLE_PROMPTS) over init states 0..N-1, through the served skill
VLA exactly as in training. Prints JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sarl_dist.config import load_config
from sarl_dist.envs import env_spec
from sarl_dist.envs.libero import ORACLE_PROMPTS
from sarl_dist.runtime.probe import probe

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "libero10.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--tasks", type=int, nargs="*", default=list(range(10)))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for task in args.tasks:
        cfg = load_config(CONFIG, [f"env.task={task}"])
        sentence = env_spec(cfg).task
        zero = probe(cfg, [], args.episodes)
        oracle = probe(cfg, list(ORACLE_PROMPTS[sentence]), args.episodes)
        rows.append(
            {
                "task": task,
                "language": sentence,
                "episodes": args.episodes,
                "zero_shot": zero["success_rate"],
                "oracle": oracle["success_rate"],
                "oracle_prompts": oracle["prompts"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    print("| task | instruction | task sentence alone | atomic sequence |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['language']} | {r['zero_shot']:.2f} | {r['oracle']:.2f} |")


if __name__ == "__main__":
    main()
