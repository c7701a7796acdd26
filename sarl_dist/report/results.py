"""`sarl report DIR`: every run under DIR as one comparison.

Runs are grouped by task, method and every other config field that differs between runs
of one task and method (a swept learner.temperature, a budget), so two settings are never
reported as one method; seeds are pooled at each evaluation point as mean and standard
error over seeds. A field a method does not read (learner.* and q.* for the baselines) is
no difference between its runs, and a second run of the same task, method, fields and
seed is a duplicate: listed, never pooled as another seed. Unfinished runs, and runs a
sweep's scheduler stopped early (stopped.json), count with the points they reached and are
not counted as finished. Writes results.md, results.csv (pooled, one row per group and
point), runs.csv (one row per run and point, its config columns beside), learning_curves.png
and final_success.png; evaluation videos found in the runs are linked from results.md.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sarl_dist.config import ConfigError, build_config
from sarl_dist.envs import env_spec
from sarl_dist.jsonl import read_jsonl
from sarl_dist.report.plots import Series, plot_comparison
from sarl_dist.run_files import STOPPED_FILE, SUMMARY_FILE

METHOD_ORDER = ("sarl", "vlm_only", "random", "zero_shot", "oracle")
# How each method acts in evaluation episodes: what its success rate measures.
EVAL_RULE = {
    "sarl": "greedy on Q",
    "vlm_only": "the VLM's pick",
    "random": "uniform over candidates",
    "zero_shot": "the task sentence",
    "oracle": "the atomic sequence",
}
UNREAD_BY_BASELINES = ("learner.", "q.")  # the baselines do not learn
GROUPED = ("seed", "method", "env.task")  # the grouping's own keys (env.task: by its sentence)
NOT_READ = "–"
log = logging.getLogger(__name__)


@dataclass
class RunResult:
    path: Path
    task: str
    method: str
    seed: int
    config: dict[str, Any]  # flattened: dotted field -> value
    curve: dict[int, float]  # episodes seen -> success rate
    stderr: dict[int, float]  # episodes seen -> s.e. over the point's evaluation episodes
    status: str  # finished, stopped (by a sweep's scheduler) or unfinished
    videos: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Group:
    """Runs pooled over seeds: a task, a method and the values of the fields that differ."""

    task: str
    method_rank: tuple[int, str]
    fields: tuple[tuple[str, Any], ...]  # (field, value or NOT_READ), in the report's order

    def order(self) -> tuple:
        """Task, method (SARL's order), then field values, numbers before text."""
        values = [
            (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)) for _, v in self.fields
        ]
        return (self.task, self.method_rank, values)

    @property
    def method(self) -> str:
        return self.method_rank[1]

    def label(self) -> str:
        shown = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.fields if v != NOT_READ]
        return ", ".join([f"{self.method} ({EVAL_RULE.get(self.method, '')})", *shown])


@dataclass
class Cell:
    """One group at one evaluation point, over seeds."""

    mean: float
    se: float
    seeds: int


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return out


def collect(root: Path) -> list[RunResult]:
    """Every run directory under root (a directory holding config.yaml and evals.jsonl)."""
    results = []
    for config_path in sorted(root.rglob("config.yaml")):
        run = config_path.parent
        evals = read_jsonl(run / "evals.jsonl")
        if not evals:
            continue
        try:
            cfg = build_config(yaml.safe_load(config_path.read_text()) or {})
        except ConfigError as exc:  # a run of another version of the code
            log.warning("%s left out: its config does not load here (%s)", run, exc)
            continue
        finished = (run / SUMMARY_FILE).is_file()
        status = "finished" if finished else "unfinished"
        if not finished and (run / STOPPED_FILE).is_file():
            status = "stopped"
        # the task sentence: the summary's, or (unfinished) from the config, which for LIBERO
        # loads the benchmark
        task = json.loads((run / SUMMARY_FILE).read_text())["task"] if finished else None
        results.append(
            RunResult(
                path=run,
                task=task or env_spec(cfg).task,
                method=cfg.method,
                seed=cfg.seed,
                config=_flatten(cfg.model_dump(mode="json")),
                curve={int(e["episodes_seen"]): float(e["success_rate"]) for e in evals},
                stderr={int(e["episodes_seen"]): float(e.get("stderr", 0.0)) for e in evals},
                status=status,
                videos=sorted((run / "videos").glob("*.mp4")),
            )
        )
    return results


def _reads(method: str, key: str) -> bool:
    return method == "sarl" or not key.startswith(UNREAD_BY_BASELINES)


def varied_fields(results: list[RunResult]) -> list[str]:
    """The fields that take two or more values among the runs of one task and method (and
    that method reads), in config order."""
    values: dict[tuple[str, str, str], set] = defaultdict(set)
    for r in results:
        for key, value in r.config.items():
            if key not in GROUPED and _reads(r.method, key):
                values[(r.task, r.method, key)].add(value)
    varied = {key for (_, _, key), seen in values.items() if len(seen) > 1}
    return [key for key in results[0].config if key in varied] if results else []


def group_of(r: RunResult, fields: list[str]) -> Group:
    rank = METHOD_ORDER.index(r.method) if r.method in METHOD_ORDER else len(METHOD_ORDER)
    values = tuple((k, r.config[k] if _reads(r.method, k) else NOT_READ) for k in fields)
    return Group(r.task, (rank, r.method), values)


def _preference(r: RunResult) -> tuple:
    """Which of two runs of the same group and seed is pooled: finished first, then the one
    that got furthest."""
    return (r.status == "finished", max(r.curve), len(r.curve), str(r.path))


def pool(
    results: list[RunResult], fields: list[str]
) -> tuple[dict[Group, dict[int, Cell]], dict[Group, list[RunResult]], list[tuple[Path, Path]]]:
    """group -> point -> mean and s.e. over the seeds that reached it; group -> its pooled
    runs; and the duplicates left out, each with the run pooled in its place."""
    by_seed: dict[Group, dict[int, list[RunResult]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by_seed[group_of(r, fields)][r.seed].append(r)
    table, members, duplicates = {}, {}, []
    for group, seeds in sorted(by_seed.items(), key=lambda item: item[0].order()):
        chosen = []
        for runs in seeds.values():
            best = max(runs, key=_preference)
            chosen.append(best)
            duplicates += [(r.path, best.path) for r in runs if r is not best]
        members[group] = chosen
        points: dict[int, list[float]] = defaultdict(list)
        for r in chosen:
            for point, value in r.curve.items():
                points[point].append(value)
        table[group] = {p: _cell(v) for p, v in sorted(points.items())}
    return table, members, duplicates


def _cell(values: list[float]) -> Cell:
    arr = np.asarray(values)
    se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0
    return Cell(float(arr.mean()), se, len(arr))


def task_labels(results: list[RunResult]) -> dict[str, str]:
    """Short task names for plots and tables: T<env.task> where each run names its task by
    an index and that index one sentence in this report, else T1..Tn by sentence."""
    by_index: dict[str, set[str]] = defaultdict(set)
    for r in results:
        by_index[str(r.config["env.task"])].add(r.task)
    tasks = sorted({r.task for r in results})
    if all(len(s) == 1 and i.isdigit() for i, s in by_index.items()):
        labels = {next(iter(s)): f"T{i}" for i, s in by_index.items()}
        return {t: labels[t] for t in sorted(tasks, key=lambda t: labels[t])}
    return {t: f"T{i + 1}" for i, t in enumerate(tasks)}


def _link(path: Path, base: Path) -> str:
    return str(path.relative_to(base) if path.is_relative_to(base) else path.resolve())


def _text(cell: Cell) -> str:
    return f"{cell.mean:.2f} ± {cell.se:.2f} ({cell.seeds})"


def write_report(root: Path, out: Path | None = None) -> Path:
    """Writes the report files into `out` (default: root) and returns results.md's path."""
    out = out or root
    results = collect(root)
    if not results:
        raise FileNotFoundError(f"no run with evaluations under {root}")
    out.mkdir(parents=True, exist_ok=True)
    fields = varied_fields(results)
    table, members, duplicates = pool(results, fields)
    labels = task_labels(results)
    left_out = {path for path, _ in duplicates}
    _write_csvs(out, results, fields, table, labels, left_out)
    _plot(out, table, labels)
    lines = _summary_lines(root, results, fields, labels, len(duplicates))
    lines += _final_point(table, fields, labels)
    lines += _task_sections(out, table, members, fields, labels)
    stopped = [r for r in results if r.status == "stopped"]
    if stopped:
        lines += ["## Stopped early by the scheduler", ""]
        lines += [f"- {_link(r.path, out)}: at {max(r.curve)} episodes" for r in stopped]
        lines.append("")
    if duplicates:
        lines += ["## Duplicates not pooled", ""]
        lines += [
            f"- {_link(path, out)}: the same task, method, fields and seed as {_link(kept, out)}"
            for path, kept in duplicates
        ]
        lines.append("")
    path = out / "results.md"
    path.write_text("\n".join(lines))
    return path


def _plot(out: Path, table, labels: dict[str, str]) -> None:
    series: dict[Group, dict[str, dict]] = defaultdict(dict)  # a method and its fields
    for g, cells in table.items():
        series[Group("", g.method_rank, g.fields)][labels[g.task]] = cells
    plot_comparison(
        [Series(s.label(), series[s]) for s in sorted(series, key=Group.order)],
        labels,
        out / "learning_curves.png",
        out / "final_success.png",
    )


def _summary_lines(root: Path, results, fields, labels: dict[str, str], duplicates: int):
    statuses = [r.status for r in results]
    return [
        f"# Results: {root}",
        "",
        f"{len(results)} runs: {statuses.count('finished')} finished, "
        f"{statuses.count('stopped')} stopped early by the sweep's scheduler, "
        f"{statuses.count('unfinished')} unfinished"
        + (f"; {duplicates} duplicates not pooled (below)" if duplicates else "")
        + ". Success rate at each evaluation point (its evaluation episodes start from "
        "fixed initial states; sarl acts greedily on Q, each baseline by its own rule), "
        "mean ± standard error over seeds (number of seeds); runs that did not finish "
        "count at the points they reached.",
        "",
        "Grouped by task, method and "
        + (", ".join(f"`{f}`" for f in fields) if fields else "nothing else")
        + f" (the fields that differ between runs of one task and method; {NOT_READ}: a "
        "method that does not read the field).",
        "",
        "Tasks: " + "; ".join(f"{label} = {task}" for task, label in labels.items()) + ".",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "![final success](final_success.png)",
        "",
    ]


def _final_point(table, fields, labels: dict[str, str]) -> list[str]:
    order = list(labels)  # tasks by label
    lines = [
        "## Final point",
        "",
        "Each group's last evaluation point (the training episodes it was taken at).",
        "",
        "| task | method | " + "".join(f"{f} | " for f in fields) + "success | episodes |",
        "|---" * (len(fields) + 4) + "|",
    ]
    for group in sorted(table, key=lambda g: (order.index(g.task), g.order())):
        cells, last = table[group], max(table[group])
        values = "".join(f"{v} | " for _, v in group.fields)
        lines.append(
            f"| {labels[group.task]} | {group.method} | {values}{_text(cells[last])} | {last} |"
        )
    return [*lines, ""]


def _task_sections(out: Path, table, members, fields, labels: dict[str, str]) -> list[str]:
    """Per task: every group's success at every evaluation point, and a few videos."""
    lines = []
    for task, label in labels.items():
        groups = [g for g in table if g.task == task]
        points = sorted({p for g in groups for p in table[g]})
        lines += [f"## {label}: {task}", ""]
        lines.append(
            "| method | "
            + "".join(f"{f} | " for f in fields)
            + " | ".join(f"ep {p}" for p in points)
            + " |"
        )
        lines.append("|---" * (len(points) + len(fields) + 1) + "|")
        for g in groups:
            row = [_text(table[g][p]) if p in table[g] else "" for p in points]
            values = "".join(f"{v} | " for _, v in g.fields)
            lines.append(f"| {g.method} | {values}" + " | ".join(row) + " |")
        videos = [(r, v) for g in groups for r in members[g] for v in r.videos[:2]]
        if videos:
            lines += ["", "Evaluation videos:"]
            lines += [f"- [{r.method} seed {r.seed}: {v.name}]({_link(v, out)})" for r, v in videos]
        lines.append("")
    return lines


def _write_csvs(out, results, fields, table, labels, left_out) -> None:
    """results.csv: one row per pooled group and evaluation point; runs.csv: one per run
    and point, with the fields each run's method does not read marked."""
    head = ["task_label", "task", "method", *fields]
    pooled = [
        [labels[g.task], g.task, g.method, *[v for _, v in g.fields], point, *_stat(cell)]
        for g, cells in table.items()
        for point, cell in cells.items()
    ]
    tail = ["episodes_seen", "success_mean", "success_se", "seeds"]
    _write_csv(out / "results.csv", head + tail, pooled)
    runs = [
        [_link(r.path, out), r.status, r.path not in left_out, labels[r.task], r.task, r.method]
        + [r.config[k] if _reads(r.method, k) else NOT_READ for k in fields]
        + [r.seed, point, f"{value:.4f}", f"{r.stderr[point]:.4f}"]
        for r in results
        for point, value in sorted(r.curve.items())
    ]
    tail = ["seed", "episodes_seen", "success_rate", "eval_se"]
    _write_csv(out / "runs.csv", ["run", "status", "pooled", *head, *tail], runs)


def _stat(cell) -> tuple[str, str, int]:
    return f"{cell.mean:.4f}", f"{cell.se:.4f}", cell.seeds


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
