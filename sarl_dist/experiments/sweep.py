"""`sarl sweep SWEEP.yaml`: the cross product of config fields, each a full run, on Ray.

A sweep file names a base experiment config, fixed overrides and a grid:

    base: ../libero10.yaml          # relative to the sweep file
    out: runs/sweeps/libero10_quick # default output directory
    set: [train.episodes=20]        # applied to every run
    grid:                           # every combination is one run
      env.task: [0, 4]
      seed: [0, 1]
      method: [sarl, random, zero_shot]

Scheduling is Ray's own: every run is one Ray task (0 CPUs) running the same driver as
`sarl train`, which places the run's actors in its own placement group. The sweep admits a
run only while the CPUs its placement group asks for are free in the cluster, so no
placement group waits, and runs land on whichever nodes have room. Ray Tune would add a
second placement-group layer and a trial checkpoint format beside ours for no gain: a
run directory already is the unit of resumption (a finished run has summary.json; an
unfinished one resumes from its last sealed checkpoint).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import ray
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sarl_dist.config import Config, ConfigError, load_config, read_yaml
from sarl_dist.jsonl import read_jsonl
from sarl_dist.runtime.actors import cpus_needed

POLL_SECONDS = 2.0


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base: Path = Field(description="The experiment config every run starts from.")
    out: Path | None = Field(None, description="Default output directory.")
    set: tuple[str, ...] = Field((), description="Overrides applied to every run.")
    grid: dict[str, list] = Field(description="Config field -> values; the product is the runs.")
    max_concurrent: int | None = Field(None, ge=1, description="Cap on runs at once.")

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list]) -> dict[str, list]:
        if not grid:
            raise ValueError("needs at least one field")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{key}: give a non-empty list of values")
        return grid


@dataclass
class PlannedRun:
    name: str
    overrides: tuple[str, ...]
    cfg: Config


def load_sweep(path: Path) -> SweepSpec:
    data = read_yaml(path)
    try:
        spec = SweepSpec.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"sweep {path}: {exc}") from None
    base = spec.base if spec.base.is_absolute() else (path.parent / spec.base).resolve()
    return spec.model_copy(update={"base": base})


def _slug(key: str, value) -> str:
    short = key.rsplit(".", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{short}{value}")


def plan(spec: SweepSpec) -> list[PlannedRun]:
    """Every run of the grid, its config validated now (a bad value stops the sweep early)."""
    keys = list(spec.grid)
    runs = []
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        grid = tuple(
            f"{k}={json.dumps(v) if isinstance(v, str) else v}"
            for k, v in zip(keys, values, strict=True)
        )
        name = "-".join(_slug(k, v) for k, v in zip(keys, values, strict=True))
        try:
            cfg = load_config(spec.base, [*spec.set, *grid])
        except ConfigError as exc:
            raise ConfigError(f"run {name}: {exc}") from None
        runs.append(PlannedRun(name, grid, cfg))
    return runs


@ray.remote(num_cpus=0)
def _run_one(cfg_data: dict, path: str, resume: bool) -> dict:
    """One run, as `sarl train` would do it, inside the cluster."""
    from sarl_dist.config import build_config
    from sarl_dist.runtime.driver import run_training
    from sarl_dist.runtime.rundir import RunDir

    cfg = build_config(cfg_data)
    run = RunDir.open(Path(path), cfg) if resume else RunDir.create(Path(path), cfg)
    summary = run_training(cfg, run, resume=resume, show_progress=False)
    summary["node_id"] = ray.get_runtime_context().get_node_id()
    return summary


def _status(path: Path) -> str:
    if (path / "summary.json").is_file():
        return "done"
    return "partial" if (path / "config.yaml").is_file() else "new"


def _last_eval(path: Path) -> str:
    evals = read_jsonl(path / "evals.jsonl")
    if not evals:
        return ""
    return f"{evals[-1]['success_rate']:.2f} @ {evals[-1]['episodes_seen']}"


def _view(runs: list[PlannedRun], out: Path, state: dict[str, str]) -> Table:
    table = Table(title=f"sweep {out}", expand=False)
    for column in ("run", "state", "episodes", "last eval"):
        table.add_column(column)
    for r in runs:
        path = out / r.name
        episodes = len(read_jsonl(path / "episodes.jsonl"))
        table.add_row(r.name, state[r.name], f"{episodes}/{r.cfg.train.episodes}", _last_eval(path))
    return table


def run_sweep(
    spec: SweepSpec, out: Path, address: str | None, resume: bool, show_progress: bool = True
) -> dict[str, dict]:
    """Runs what the sweep still needs; returns run name -> summary (or error)."""
    runs = plan(spec)
    out.mkdir(parents=True, exist_ok=True)
    started = {r.name: _status(out / r.name) for r in runs}
    if not resume and any(s != "new" for s in started.values()):
        raise ConfigError(f"{out} already holds runs of a sweep; add --resume to finish it")
    (out / "sweep.yaml").write_text(yaml.safe_dump(json.loads(spec.model_dump_json())))
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:  # an interrupted sweep stops its runs with it; --resume picks them up
        return _drive(runs, out, started, spec.max_concurrent or len(runs), show_progress)
    finally:
        if started_ray:
            ray.shutdown()


def _drive(
    runs: list[PlannedRun], out: Path, started: dict[str, str], limit: int, show_progress: bool
) -> dict[str, dict]:
    """Admit runs while their CPUs are free, collect their summaries, show progress."""
    capacity = ray.cluster_resources().get("CPU", 0.0)
    too_big = [r.name for r in runs if cpus_needed(r.cfg) > capacity]
    if too_big:
        raise ConfigError(
            f"runs {', '.join(too_big)} need more CPUs than the cluster has ({capacity:g})"
        )
    state = {name: ("done" if s == "done" else "queued") for name, s in started.items()}
    queue = [r for r in runs if state[r.name] == "queued"]
    results: dict[str, dict] = {}
    pending: dict = {}
    free = capacity
    console = Console(stderr=True)
    live = Live(_view(runs, out, state), console=console, refresh_per_second=1)
    if show_progress:
        live.start()
    try:
        while queue or pending:
            while queue and len(pending) < limit and cpus_needed(queue[0].cfg) <= free:
                r = queue.pop(0)
                free -= cpus_needed(r.cfg)
                ref = _run_one.remote(
                    r.cfg.model_dump(mode="json"),
                    str(out / r.name),
                    started[r.name] == "partial",
                )
                pending[ref] = r
                state[r.name] = "running"
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                r = pending.pop(ref)
                free += cpus_needed(r.cfg)
                try:
                    results[r.name] = ray.get(ref)
                    state[r.name] = "done"
                except Exception as exc:  # one failed run does not stop the others
                    results[r.name] = {"error": f"{type(exc).__name__}: {exc}"}
                    state[r.name] = "failed"
            if show_progress:
                live.update(_view(runs, out, state))
    finally:
        if show_progress:
            live.stop()
    return results
