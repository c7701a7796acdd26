"""`sarl sweep SWEEP.yaml`: a grid of config fields, each point a full run, as a Ray Tune
experiment.

    base: ../skill_chain.yaml        # relative to the sweep file
    out: runs/sweeps/sc_temperature  # default output directory
    set: [train.episodes=20]         # applied to every run
    grid:                            # every combination is one run ...
      env.task: [0, 1]
      seed: [0, 1]
      method: [sarl, zero_shot]
      learner.temperature: [0.03, 0.3]
    exclude:                         # ... but those matching an entry here
      - {method: zero_shot, learner.temperature: 0.3}
    only: []                         # ... and, when given, only those matching one here
    search:                          # optional: fields Tune samples, per grid point
      samples: 4
      space: {learner.lr: {loguniform: [1.0e-4, 1.0e-2]}}
      algorithm: random              # or module:Class, any Tune Searcher (`options`: kwargs)
    scheduler: {kind: asha, options: {grace_period: 20}}   # or module:Class
    max_concurrent: 4
    max_failures: 1                  # Tune retries a failed trial this often
    wandb: {project: sarl}           # optional logger callbacks, if the package is installed
    mlflow: {experiment_name: sarl}

Each run is one Tune trial whose resources are the run's whole placement group: an empty
bundle for the trial itself, then the bundles of the run's actors (placement_bundles), so
Tune admits and queues runs by everything they ask for, CPUs and GPUs. The trial runs the
same driver as `sarl train` with its actors in the trial's placement group, and reports
every evaluation point (episodes_seen, eval_success) so a scheduler such as ASHA can stop
weak settings early. Run directories keep their layout, <out>/<run name>/ (`sarl train
--resume` and `sarl report` read them), each with its own run.log; Tune's state, its
CSV/JSON/TensorBoard logs and the trials' result files live in <out>/_tune/. A trial that
finds its run directory started continues it from the run's own last checkpoint, so a
restored (Tuner.restore) or retried trial never starts a run over.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from ray import tune
from ray.tune.search import BasicVariantGenerator, Searcher

from sarl_dist.config import Config, ConfigError, dict_changes, read_yaml
from sarl_dist.experiments.trial import (
    METRIC,
    TIME_ATTR,
    EveryPoint,
    Sweep,
    Watch,
    last_point,
    trial,
)
from sarl_dist.run_files import CONFIG_FILE, STOPPED_FILE
from sarl_dist.runtime.actors import placement_bundles

TUNE_DIR, SPEC_FILE, BASE_FILE = "_tune", "sweep.yaml", "sweep_base.yaml"
# Tune's sampling functions a sweep file may name (choice takes the list of categories).
DISTRIBUTIONS = (
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "randn",
    "qrandn",
    "randint",
    "qrandint",
    "lograndint",
    "qlograndint",
    "choice",
)
# Per resource, the fields that lower what one run asks for (named when a run cannot fit).
LOWER_BY = {
    "CPU": "runtime.num_workers, runtime.worker_cpus, runtime.learner_cpus, runtime.vlm_cpus, "
    "vla.server_cpus, vla.replicas",
    "GPU": "runtime.worker_gpus, vla.server_gpus",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchSpec(_Strict):
    samples: int = Field(1, ge=1, description="Trials per grid point, each with fresh samples.")
    space: dict[str, dict[str, list]] = Field(
        default_factory=dict,
        description="Config field -> {distribution: [arguments]}, one of Tune's sampling "
        "functions (loguniform, uniform, randint, choice, ...).",
    )
    algorithm: str = Field(
        "random",
        description="random (Tune's random search) or module:Class, a Tune Searcher; it "
        "searches `space`, and each of its suggestions runs at every grid point.",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="The algorithm's kwargs.")

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpec:
        for key, dist in self.space.items():
            if len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
                raise ValueError(
                    f"space.{key}: give one of {', '.join(DISTRIBUTIONS)} with its arguments"
                )
        if not self.space and (self.samples > 1 or self.algorithm != "random"):
            raise ValueError("samples or an algorithm need a space of fields to sample")
        return self


class SchedulerSpec(_Strict):
    kind: str = Field(
        description="asha (ASHAScheduler on episodes_seen, up to train.episodes) or "
        "module:Class, a Tune TrialScheduler."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="The scheduler's kwargs.")


class SweepSpec(_Strict):
    base: Path = Field(description="The experiment config every run starts from.")
    out: Path | None = Field(None, description="Default output directory.")
    set: tuple[str, ...] = Field((), description="Overrides applied to every run.")
    grid: dict[str, list] = Field(description="Config field -> values; the product is the runs.")
    only: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Keep only the combinations matching one entry (field -> value or list).",
    )
    exclude: list[dict[str, Any]] = Field(
        default_factory=list, description="Drop the combinations matching any entry."
    )
    search: SearchSpec | None = None
    scheduler: SchedulerSpec | None = None
    max_concurrent: int | None = Field(None, ge=1, description="Cap on runs at once.")
    max_failures: int = Field(0, ge=0, description="Times Tune retries a failed run.")
    wandb: dict[str, Any] | None = Field(None, description="WandbLoggerCallback's kwargs.")
    mlflow: dict[str, Any] | None = Field(None, description="MLflowLoggerCallback's kwargs.")

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list]) -> dict[str, list]:
        if not grid:
            raise ValueError("needs at least one field")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{key}: give a non-empty list of values")
        return grid

    @model_validator(mode="after")
    def _filters_name_the_grid(self) -> SweepSpec:
        """A filter on a field or value the grid lacks is a typo that would silently keep
        or drop nothing."""
        for kind in ("only", "exclude"):
            for i, entry in enumerate(getattr(self, kind)):
                if not entry:
                    raise ValueError(f"{kind}[{i}]: an empty entry matches everything")
                for key, wanted in entry.items():
                    if key not in self.grid:
                        raise ValueError(f"{kind}[{i}]: {key} is not a grid field")
                    missing = [v for v in _as_list(wanted) if v not in self.grid[key]]
                    if missing:
                        raise ValueError(f"{kind}[{i}]: {key}={missing} is not in the grid")
        return self


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _matches(point: dict, entry: dict) -> bool:
    return all(point[k] in _as_list(v) for k, v in entry.items())


@dataclass(frozen=True)
class PlannedRun:
    """A grid point: its run name, its field values and its config (sampled fields at a
    draw: they are validated, and resources are counted, with it)."""

    name: str
    point: dict[str, Any]
    cfg: Config


def load_sweep(path: Path) -> SweepSpec:
    data = read_yaml(path)
    try:
        spec = SweepSpec.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"sweep {path}: {exc}") from None
    base = spec.base if spec.base.is_absolute() else (path.parent / spec.base).resolve()
    return spec.model_copy(update={"base": base})


def _domain(key: str, dist: dict[str, list]):
    """A Tune search domain from `{distribution: [arguments]}`."""
    ((name, args),) = dist.items()
    try:
        if name == "choice":
            return tune.choice(args)
        return getattr(tune, name)(*(float(a) if isinstance(a, str) else a for a in args))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"search.space.{key}: {name}{tuple(args)}: {exc}") from None


def _import(path: str, kind: type, what: str):
    """`module:Class`, which must be a subclass of `kind`."""
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{what}: cannot import {path!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, kind)):
        raise ConfigError(f"{what}: {path} is not a {kind.__name__}")
    return cls


def plan(spec: SweepSpec) -> list[PlannedRun]:
    """Every run of the filtered grid, its config validated now, so a bad value or field
    stops the sweep before anything runs."""
    combos = [dict(zip(spec.grid, v, strict=True)) for v in itertools.product(*spec.grid.values())]
    sweep = Sweep(Path(), read_yaml(spec.base), spec.set, tuple(spec.grid))
    draw = {k: _domain(k, d).sample() for k, d in (spec.search or SearchSpec()).space.items()}
    runs = []
    for point in combos:
        if spec.only and not any(_matches(point, e) for e in spec.only):
            continue
        if any(_matches(point, e) for e in spec.exclude):
            continue
        name = sweep.run_name(point)
        try:
            runs.append(PlannedRun(name, point, sweep.config(point | draw)))
        except ConfigError as exc:
            raise ConfigError(f"run {name}: {exc}") from None
    if not runs:
        raise ConfigError("only/exclude leave no run")
    return runs


def check_fits(runs: list[PlannedRun]) -> None:
    """Refuse at once runs the cluster could never place: one run's placement group needs
    more of a resource than the cluster has (or, STRICT_PACK, than its largest node), or a
    bundle fits no node. Names the need by actor and the fields that lower it."""
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    total: Counter[str] = Counter()
    for node in nodes:
        total.update(node)
    refused: dict[str, list[str]] = {}
    for r in runs:
        bundles = placement_bundles(r.cfg)
        need: Counter[str] = Counter()
        for bundle in bundles:
            need.update(bundle)
        groups = [dict(need)] if r.cfg.runtime.placement == "STRICT_PACK" else bundles
        short = {k for k, v in need.items() if v > total.get(k, 0) + 1e-9}
        for group in (g for g in groups if not any(_fits(g, n) for n in nodes)):
            # the resources no node has enough of; all of the group's when only together
            alone = {k for k, v in group.items() if not any(_fits({k: v}, n) for n in nodes)}
            short |= alone or set(group)
        if short:
            refused.setdefault(_need_text(r.cfg, need, short), []).append(r.name)
    if refused:
        have = ", ".join(f"{total.get(k, 0):g} {k}" for k in ("CPU", "GPU"))
        lines = [
            f"{names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''}: {need}"
            for need, names in refused.items()
        ]
        raise ConfigError(
            f"runs the cluster ({have}, {len(nodes)} node(s)) can never place:\n  "
            + "\n  ".join(lines)
        )


def _fits(bundle: dict, node: dict) -> bool:
    return all(node.get(k, 0) + 1e-9 >= v for k, v in bundle.items())


def _need_text(cfg: Config, need: Counter, short: set[str]) -> str:
    """One run's need by actor, the placement strategy, and the fields to lower."""
    bundles = placement_bundles(cfg)
    workers = cfg.runtime.num_workers
    actors = [("Learner", 1, bundles[0]), ("VLMService", 1, bundles[1])]
    actors.append(("EnvWorker", workers, bundles[2]))
    if len(bundles) > 2 + workers:
        actors.append(("VLA server", len(bundles) - 2 - workers, bundles[-1]))
    parts = [
        f"{f'{n} x ' if n > 1 else ''}{name} ({', '.join(f'{v:g} {k}' for k, v in b.items())})"
        for name, n, b in actors
    ]
    lower = "; ".join(f"{k}: {LOWER_BY.get(k, 'vla.server_resources')}" for k in sorted(short))
    return (
        f"each run needs {', '.join(f'{v:g} {k}' for k, v in need.items())} "
        f"({cfg.runtime.placement}: {', '.join(parts)}); short of {', '.join(sorted(short))}; "
        f"lower {lower}"
    )


def _recorded(spec: SweepSpec) -> dict:
    """The sweep file as recorded in its directory (where `out` may differ)."""
    return json.loads(spec.model_dump_json(exclude={"out"}))


def _compared(recorded: dict) -> dict:
    """What a resume must find unchanged: the base file's place may differ (a moved
    checkout), its content may not (compared on its own)."""
    return {k: v for k, v in recorded.items() if k != "base"}


def check_unchanged(spec: SweepSpec, out: Path) -> None:
    """A resume continues the sweep as it started: refuse a changed sweep file or base
    config, listing what changed."""
    if not (out / SPEC_FILE).is_file():
        return
    was = yaml.safe_load((out / SPEC_FILE).read_text())
    changes = dict_changes(_compared(was), _compared(_recorded(spec)))
    if (out / BASE_FILE).is_file():
        was = yaml.safe_load((out / BASE_FILE).read_text())
        changes += [f"base config {c}" for c in dict_changes(was, read_yaml(spec.base))]
    if changes:
        raise ConfigError(
            f"{out} was started from a different sweep; changed: {', '.join(changes)}. "
            "Restore the sweep file, or start the new sweep in another --out"
        )


def _status(path: Path) -> str:
    if last_point(path) is not None:
        return "stopped" if (path / STOPPED_FILE).is_file() else "done"
    return "partial" if (path / CONFIG_FILE).is_file() else "new"


def _search(spec: SweepSpec, runs: list[PlannedRun]) -> tuple[dict, Any, int]:
    """Tune's param space, search algorithm and num_samples. Random search is Tune's own:
    every grid point `samples` times (its fields as points to evaluate, the rest drawn from
    the space; the grid's fields are the space's choices only so that Tune's table and logs
    show them). Another algorithm searches the space; each suggestion runs at every point."""
    search = spec.search or SearchSpec()
    space = {k: _domain(k, d) for k, d in search.space.items()}
    points = [r.point for r in runs]
    if search.algorithm == "random":
        repeats = [p for p in points for _ in range(search.samples)]
        grid = {k: tune.choice(v) for k, v in spec.grid.items()}
        variants = BasicVariantGenerator(
            points_to_evaluate=repeats, max_concurrent=spec.max_concurrent or 0
        )
        return grid | space, variants, len(repeats)
    cls = _import(search.algorithm, Searcher, "search.algorithm")
    try:
        searcher = cls(**search.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"search.options: {search.algorithm}: {exc}") from None
    return space, EveryPoint(searcher, points), search.samples * len(points)


def _scheduler(spec: SweepSpec, runs: list[PlannedRun]):
    if spec.scheduler is None:
        return None
    kind, options = spec.scheduler.kind, dict(spec.scheduler.options)
    if kind == "asha":
        options = {"time_attr": TIME_ATTR, "max_t": max(r.cfg.train.episodes for r in runs)} | (
            options
        )
        cls = tune.schedulers.ASHAScheduler
    else:
        cls = _import(kind, tune.schedulers.TrialScheduler, "scheduler.kind")
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"scheduler.options: {kind}: {exc}") from None


def _callbacks(spec: SweepSpec) -> list:
    """W&B and MLflow loggers, when the sweep file asks and the package is installed."""
    callbacks = []
    for name, kwargs, where in (
        ("wandb", spec.wandb, "ray.air.integrations.wandb:WandbLoggerCallback"),
        ("mlflow", spec.mlflow, "ray.air.integrations.mlflow:MLflowLoggerCallback"),
    ):
        if kwargs is None:
            continue
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"{name}: the package is not installed (pip install {name})")
        callbacks.append(_import(where, tune.Callback, name)(**kwargs))
    return callbacks


@dataclass
class SweepResult:
    trials: int
    status: dict[str, str]  # run name -> done | stopped | failed | unfinished
    ran: int  # runs that ended (done, stopped, failed) in this call
    errors: dict[str, str]

    @property
    def interrupted(self) -> bool:
        return "unfinished" in self.status.values()

    def counts(self) -> dict:
        states = Counter(self.status.values())
        keys = ("done", "stopped", "unfinished")
        return {"trials": self.trials, "ran": self.ran, **{k: states[k] for k in keys}} | {
            "failed": self.errors
        }


def _check_start(spec: SweepSpec, out: Path, resume: bool) -> None:
    """A sweep directory is started once; a resume must bring the same sweep file."""
    started = out.is_dir() and any(
        p.name == TUNE_DIR or (p / CONFIG_FILE).is_file() for p in out.iterdir()
    )
    if started and not resume:
        raise ConfigError(f"{out} already holds runs of a sweep; add --resume to finish it")
    if resume:
        check_unchanged(spec, out)


def _record(spec: SweepSpec, out: Path) -> None:
    """The sweep file and its base config, as the sweep first ran them (what a resume
    is checked against)."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / SPEC_FILE).is_file():
        (out / SPEC_FILE).write_text(yaml.safe_dump(_recorded(spec), sort_keys=False))
        (out / BASE_FILE).write_text(yaml.safe_dump(read_yaml(spec.base), sort_keys=False))


def run_sweep(
    spec: SweepSpec, out: Path, address: str | None, resume: bool, show_progress: bool = True
) -> SweepResult:
    """Runs what the sweep still needs as a Tune experiment (Tuner.restore on --resume)."""
    runs = plan(spec)
    out = out.resolve()
    param_space, search_alg, num_samples = _search(spec, runs)
    scheduler = _scheduler(spec, runs)
    callbacks = _callbacks(spec)
    _check_start(spec, out, resume)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        check_fits(runs)
        _record(spec, out)
        before = {p.name: _status(p) for p in out.iterdir() if p.is_dir()}
        sweep = Sweep(out, read_yaml(spec.base), spec.set, tuple(spec.grid))
        per_point = spec.search.samples if spec.search else 1
        watch = Watch(
            sweep,
            trials=len(runs) * per_point,
            episodes=sum(r.cfg.train.episodes for r in runs) * per_point,
            scheduler=type(scheduler).__name__ if scheduler else "scheduler",
            show=show_progress,
        )
        tune_config = tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=num_samples,
            # a random search's generator has the cap itself
            max_concurrent_trials=None
            if isinstance(search_alg, BasicVariantGenerator)
            else spec.max_concurrent,
            trial_name_creator=sweep.trial_name,
            trial_dirname_creator=sweep.trial_name,
            reuse_actors=False,  # a process per trial: no run directory lock outlives its trial
        )
        run_config = tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(out),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=[watch, *callbacks],
            verbose=1 if show_progress else 0,
        )
        grid = _fit(sweep, param_space, tune_config, run_config)
        return _outcome(grid, out, before, watch.trials)
    finally:
        if started_ray:
            ray.shutdown()


def _outcome(grid: tune.ResultGrid, out: Path, before: dict[str, str], trials: int) -> SweepResult:
    """Each trial's state after the fit, and how many ended in this call."""
    status, errors = {}, {}
    for result in grid:
        name = Path(result.path).name
        status[name] = {"partial": "unfinished", "new": "unfinished"}.get(
            _status(out / name), _status(out / name)
        )
        if result.error is not None and status[name] == "unfinished":
            status[name], errors[name] = "failed", str(result.error).strip().splitlines()[-1]
    ended = [n for n, s in status.items() if s != "unfinished"]
    ran = sum(before.get(n) not in ("done", "stopped") for n in ended)
    return SweepResult(trials, status, ran, errors)


def _fit(sweep: Sweep, param_space: dict, tune_config, run_config) -> tune.ResultGrid:
    """Tuner.fit, or where Tune has state for the sweep, Tuner.restore(...).fit(): its
    unfinished and failed trials run again (continuing their run directories)."""
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"  # trials keep the sweep's working directory
    trainable = tune.with_resources(tune.with_parameters(trial, sweep=sweep), sweep.resources)
    path = sweep.out / TUNE_DIR
    if tune.Tuner.can_restore(path):
        return tune.Tuner.restore(str(path), trainable, resume_errored=True).fit()
    return tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
    ).fit()
