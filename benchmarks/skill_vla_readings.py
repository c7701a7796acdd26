"""How the skill VLA reads each LIBERO-10 sentence alone, over the benchmark's init states.

    python benchmarks/skill_vla_readings.py [--inits 50] [--tasks 0 1 ...] [--out readings.json]

The failure model's draws (grammar.scene_draw) depend only on the words and on where the
objects the sentence does not name rest, so each init state's reading is known at reset,
without running the episode: the first clause (share `vla.p_partial`) or a misgrounded
skill, and whether the sentence is then read whole once its first clause shows done
(share `vla.p_zero_shot`); for the near-copy (task 5), whether its own words are read
(both draws).
The sentence alone can succeed only in "whole" episodes; its success is about that share
times the atomic sequence's. Prints one JSON line per task, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "libero10.yaml"


def readings(task: int, inits: int) -> dict:
    from sarl_dist.config import load_config
    from sarl_dist.envs import make_env
    from sarl_dist.prompt_text import normalize_prompt
    from sarl_dist.vla.skill.grammar import compound_draws, own_words, recall

    cfg = load_config(CONFIG, [f"env.task={task}"])
    env = make_env(cfg)
    text = normalize_prompt(env.spec.task)
    p_partial, p_zero_shot = cfg.vla.p_partial, cfg.vla.p_zero_shot
    counts = {"first clause": 0, "misread": 0, "whole": 0}
    for i in range(inits):
        env.reset(i, init_index=i)
        scene = env.privileged()
        if recall(text, scene["scene"]) != text:  # a near-copy: its own words, or taught
            counts["whole" if own_words(text, scene, p_partial, p_zero_shot) else "misread"] += 1
            continue
        _, first, carry = compound_draws(text, scene, p_partial, p_zero_shot)
        counts["whole" if carry else "first clause" if first else "misread"] += 1
    env.close()
    return {"task": task, "language": env.spec.task, "inits": inits, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inits", type=int, default=50)
    parser.add_argument("--tasks", type=int, nargs="*", default=list(range(10)))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for task in args.tasks:
        rows.append(readings(task, args.inits))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    print("\n| task | instruction | first clause only | misread | read whole |")
    print("|---|---|---|---|---|")
    for r in rows:
        n = r["inits"]
        print(
            f"| {r['task']} | {r['language']} | {r['first clause'] / n:.2f} | "
            f"{r['misread'] / n:.2f} | {r['whole'] / n:.2f} |"
        )


if __name__ == "__main__":
    main()
