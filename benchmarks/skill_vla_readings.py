"""How the skill VLA reads each LIBERO-10 sentence alone, over the benchmark's init states.

    python benchmarks/skill_vla_readings.py [--inits 50] [--out readings.json]

The failure model's draws (grammar.scene_draw) depend only on the words and on where the
objects the sentence does not name rest, so each init state's reading is known at reset,
without running the episode: the first clause (share `vla.p_partial`) or a misgrounded
skill, and whether the sentence is then read whole once its first clause shows done
(share `vla.p_zero_shot`); for the near-copy (task 5), whether its own words are read.
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
    from sarl_dist.vla.skill.goal import Predicate
    from sarl_dist.vla.skill.grammar import misread, recall, scene_draw, whole_goal
    from sarl_dist.vla.skill.grammar import parse as parse_atomic

    cfg = load_config(CONFIG, [f"env.task={task}"])
    env = make_env(cfg)
    text = normalize_prompt(env.spec.task)
    counts = {"first clause": 0, "misread": 0, "whole": 0}
    for i in range(inits):
        env.reset(i, init_index=i)
        scene = env.privileged()
        if recall(text, scene["scene"]) != text:  # a near-copy: its own words, or taught
            literal: Predicate = parse_atomic(text, scene)
            own = scene_draw(text, scene, set(literal.args), "literal") < cfg.vla.p_zero_shot
            counts["whole" if own else "misread"] += 1
            continue
        whole, wrong = whole_goal(text, scene), misread(text, scene)
        named = {a for p in (*(whole or ()), *(wrong or ())) for a in p.args}
        if whole is None or scene_draw(text, scene, named, "reading") >= cfg.vla.p_partial:
            counts["misread"] += 1
        elif scene_draw(text, scene, named, "carry") < cfg.vla.p_zero_shot:
            counts["whole"] += 1
        else:
            counts["first clause"] += 1
    env.close()
    return {"task": task, "language": env.spec.task, "inits": inits, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inits", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for task in range(10):
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
