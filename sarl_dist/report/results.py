"""`sarl report DIR`: every run under DIR as one comparison.

Runs are grouped by (task, method); seeds are pooled at each evaluation point as mean and
standard error over seeds (SARL's protocol: 3 seeds, an evaluation every 50 episodes).
Unfinished runs count with the evaluation points they reached. Writes results.md and
results.csv (success per task x method at each point), learning_curves.png (one panel
per task, methods overlaid, s.e. bands) and final_success.png; evaluation videos found in
the runs are linked from results.md.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from sarl_dist.config import build_config
from sarl_dist.envs import env_spec
from sarl_dist.jsonl import read_jsonl
from sarl_dist.report.plots import plot_comparison

METHOD_ORDER = ("sarl", "vlm_only", "random", "zero_shot", "oracle")


@dataclass
class RunResult:
    path: Path
    task: str
    method: str
    seed: int
    curve: dict[int, float]  # episodes seen -> greedy success rate
    finished: bool
    videos: list[Path] = field(default_factory=list)


@dataclass
class Cell:
    """One (task, method) at one evaluation point, over seeds."""

    mean: float
    se: float
    seeds: int


def _task_of(run: Path, config: dict) -> str:
    """The task sentence: from the summary, or (an unfinished run) from its config."""
    summary = run / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())["task"]
    return env_spec(build_config(config)).task


def collect(root: Path) -> list[RunResult]:
    """Every run directory under root (a directory holding config.yaml and evals.jsonl)."""
    results = []
    for config_path in sorted(root.rglob("config.yaml")):
        run = config_path.parent
        evals = run / "evals.jsonl"
        if not evals.is_file():
            continue
        config = yaml.safe_load(config_path.read_text()) or {}
        curve = {int(e["episodes_seen"]): float(e["success_rate"]) for e in read_jsonl(evals)}
        if not curve:
            continue
        results.append(
            RunResult(
                path=run,
                task=_task_of(run, config),
                method=config.get("method", "sarl"),
                seed=int(config.get("seed", 0)),
                curve=curve,
                finished=(run / "summary.json").is_file(),
                videos=sorted((run / "videos").glob("*.mp4")),
            )
        )
    return results


def aggregate(results: list[RunResult]) -> dict[tuple[str, str], dict[int, Cell]]:
    """(task, method) -> evaluation point -> mean and s.e. over the seeds that reached it."""
    grouped: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        for point, value in r.curve.items():
            grouped[(r.task, r.method)][point].append(value)
    table = {}
    for key, points in grouped.items():
        table[key] = {}
        for point, values in sorted(points.items()):
            arr = np.asarray(values)
            se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0
            table[key][point] = Cell(float(arr.mean()), se, len(arr))
    return table


def _link(path: Path, base: Path) -> str:
    return str(path.relative_to(base) if path.is_relative_to(base) else path.resolve())


def _cell(cell: Cell) -> str:
    return f"{cell.mean:.2f} ± {cell.se:.2f} ({cell.seeds})"


def _method_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def write_report(root: Path, out: Path | None = None) -> Path:
    """Writes the report files into `out` (default: root) and returns results.md's path."""
    out = out or root
    results = collect(root)
    if not results:
        raise FileNotFoundError(f"no run with evaluations under {root}")
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(results)
    tasks = sorted({t for t, _ in table})
    methods = sorted({m for _, m in table}, key=_method_key)
    points = sorted({p for cells in table.values() for p in cells})

    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "method", "episodes_seen", "success_mean", "success_se", "seeds"])
        for (task, method), cells in sorted(table.items()):
            for point, cell in cells.items():
                writer.writerow(
                    [task, method, point, f"{cell.mean:.4f}", f"{cell.se:.4f}", cell.seeds]
                )

    plot_comparison(table, tasks, methods, out / "learning_curves.png", out / "final_success.png")

    lines = [
        f"# Results: {root}",
        "",
        f"{len(results)} runs ({sum(r.finished for r in results)} finished); greedy success "
        "rate, mean ± standard error over seeds (number of seeds).",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "![final success](final_success.png)",
        "",
        "## Final point",
        "",
        "Each method's last evaluation point (training episodes seen in brackets).",
        "",
        "| task | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for task in tasks:
        row = []
        for method in methods:
            cells = table.get((task, method))
            last = max(cells) if cells else None
            row.append(_cell(cells[last]) + f" [{last}]" if cells else "")
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    lines.append("")
    for task in tasks:
        lines += [f"## {task}", "", "| method | " + " | ".join(f"ep {p}" for p in points) + " |"]
        lines.append("|---" * (len(points) + 1) + "|")
        for method in methods:
            cells = table.get((task, method))
            if cells is None:
                continue
            row = [_cell(cells[p]) if p in cells else "" for p in points]
            lines.append(f"| {method} | " + " | ".join(row) + " |")
        videos = [(r, v) for r in results if r.task == task for v in r.videos[:2]]
        if videos:
            lines += ["", "Evaluation videos:"]
            lines += [f"- [{r.method} seed {r.seed}: {v.name}]({_link(v, out)})" for r, v in videos]
        lines.append("")
    path = out / "results.md"
    path.write_text("\n".join(lines))
    return path
