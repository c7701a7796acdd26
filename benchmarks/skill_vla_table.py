"""The skill VLA on every task of a LIBERO suite: each task's own sentence, and, where the
task has one, its atomic prompt sequence.

    python benchmarks/skill_vla_table.py --suite libero_90 [--episodes 10] [--tasks 0 1 ...]
        [--workers W] [--out table.json] [--only sentence|atomic]

Each task runs `sarl probe` (the served skill VLA, reached over openpi's websocket protocol
exactly as in training) over the suite's fixed init states 0..N-1: with the task's own
sentence at every decision, and with `envs.libero.ORACLE_PROMPTS` (one prompt per decision,
the episode ends on success) for LIBERO-10's tasks and libero_goal's compound one. Tasks
are spread over W processes (default: the machine's cores). Prints one JSON line per task,
then a Markdown table. `--only` measures one of the two (the sentence alone runs every
decision to the end when it fails, so it costs most of a LIBERO-10 sweep's time).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "libero10.yaml"


def measure(suite: str, task: int, episodes: int, only: str | None = None) -> dict:
    """One task: its sentence alone, and its atomic sequence if it has one."""
    from sarl_dist.config import load_config
    from sarl_dist.envs import env_spec
    from sarl_dist.envs.libero import ORACLE_PROMPTS
    from sarl_dist.runtime.probe import probe

    start = time.perf_counter()
    cfg = load_config(CONFIG, [f"env.libero.suite={suite}", f"env.task={task}"])
    sentence = env_spec(cfg).task
    row = {"suite": suite, "task": task, "language": sentence, "episodes": episodes}
    if only != "atomic":
        row["sentence"] = probe(cfg, [], episodes)["success_rate"]
    if sentence in ORACLE_PROMPTS and only != "sentence":
        row["atomic"] = probe(cfg, list(ORACLE_PROMPTS[sentence]), episodes)["success_rate"]
        row["atomic_prompts"] = list(ORACLE_PROMPTS[sentence])
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def table(rows: list[dict]) -> str:
    columns = [c for c in ("sentence", "atomic") if any(c in r for r in rows)]
    head = "| task | instruction |" + "".join(f" {c} |" for c in columns)
    lines = [head, "|---|---|" + "---|" * len(columns)]
    for r in rows:
        cells = "".join(f" {r[c]:.2f} |" if c in r else " |" for c in columns)
        lines.append(f"| {r['task']} | {r['language']} |{cells}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_10")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--tasks", type=int, nargs="*")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", choices=("sentence", "atomic"))
    args = parser.parse_args()
    from sarl_dist.libero_setup import libero_suite

    tasks = args.tasks if args.tasks else list(range(libero_suite(args.suite).n_tasks))
    rows = []
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        jobs = [pool.submit(measure, args.suite, t, args.episodes, args.only) for t in tasks]
        for job in jobs:
            rows.append(job.result())
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    for c in ("sentence", "atomic"):
        if any(c in r for r in rows):
            good = sum(r.get(c, 0.0) >= 0.8 for r in rows)
            print(f"\n{args.suite}: {c} >= 0.8 on {good}/{len(rows)} tasks")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
