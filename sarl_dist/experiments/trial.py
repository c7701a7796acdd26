"""What runs inside a sweep's Ray Tune experiment (experiments/sweep.py starts it): the
trainable that runs one SARL run as a trial, the searcher wrapper that runs a search
algorithm's suggestions at every grid point, and the callback that marks runs a scheduler
stopped and prints the sweep's state.

A trial's Tune config is its fields (the grid's and any sampled: field -> value), so Tune's
table, result files and TensorBoard hyperparameters show them. The trainable builds the
run's config from them, runs the driver of `sarl train` with the run's actors in the
trial's placement group (bundle 0 of Tune's factory is the trial's own, empty; the rest are
placement_bundles, in the driver's order), and reports every evaluation point.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import ray
import yaml
from ray import tune
from ray.tune.search import Repeater, Searcher
from ray.tune.search.repeater import TRIAL_INDEX
from rich.console import Console

from sarl_dist.config import Config, apply_overrides, build_config
from sarl_dist.run_files import (
    CONFIG_FILE,
    EPISODES_FILE,
    LOG_FILE,
    STOPPED_FILE,
    SUMMARY_FILE,
)
from sarl_dist.runtime import checkpoint as ckpt
from sarl_dist.runtime.actors import placement_bundles
from sarl_dist.runtime.driver import run_training
from sarl_dist.runtime.rundir import RunDir, RunInUseError
from sarl_dist.runtime.scheduler import RunError

METRIC, TIME_ATTR = "eval_success", "episodes_seen"  # what trials report, for schedulers
# A retried or restored trial waits this long for the attempt before it to let go of the run
# directory (Tune stops that attempt's process asynchronously).
LOCK_WAIT_S = 60.0
STATUS_EVERY_S = 30.0
log = logging.getLogger(__name__)


def override(key: str, value) -> str:
    return f"{key}={json.dumps(value) if isinstance(value, str) else value}"


def _slug(key: str, value) -> str:
    short = key.rsplit(".", 1)[-1]
    if isinstance(value, float) and len(repr(value)) > 8:  # a sampled value
        value = f"{value:.3g}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{short}{value}")


@dataclass(frozen=True)
class Sweep:
    """What a trial needs to build its run from its Tune config (field -> value, the grid's
    and any sampled): the output directory, the base config as read at the start (a later
    edit of the file changes no trial), the fixed overrides and the grid's fields in order.
    Plain data: it travels to every trial."""

    out: Path
    base: dict
    set: tuple[str, ...]
    grid: tuple[str, ...]

    def config(self, config: dict) -> Config:
        overrides = [*self.set, *(override(k, v) for k, v in config.items())]
        return build_config(apply_overrides(self.base, overrides))

    def run_name(self, config: dict, trial_id: str = "") -> str:
        """The grid point's name; with sampled fields, their values and the trial id too
        (two draws may coincide)."""
        sampled = sorted((k, v) for k, v in config.items() if k not in self.grid)
        parts = [_slug(k, config[k]) for k in self.grid]
        return "-".join(parts + ([*(_slug(k, v) for k, v in sampled), trial_id] if sampled else []))

    def trial_name(self, trial) -> str:
        """Tune's name for a trial, and its folder under _tune/: the run's name."""
        return self.run_name(trial.config, trial.trial_id)

    def resources(self, config: dict) -> tune.PlacementGroupFactory:
        """The trial's placement group: an empty bundle for the trial itself, then the run's."""
        cfg = self.config(config)
        return tune.PlacementGroupFactory(
            [{}, *placement_bundles(cfg)], strategy=cfg.runtime.placement
        )


def last_point(path: Path) -> dict | None:
    """A finished run's last point (summary.json), or where a scheduler stopped it."""
    if (path / SUMMARY_FILE).is_file():
        summary = json.loads((path / SUMMARY_FILE).read_text())
        return {TIME_ATTR: summary["episodes"], METRIC: summary["final_eval_success"]}
    if (path / STOPPED_FILE).is_file():
        stopped = json.loads((path / STOPPED_FILE).read_text())
        return {TIME_ATTR: stopped[TIME_ATTR], METRIC: stopped[METRIC]}
    return None


def _open_run(path: Path, cfg: Config) -> tuple[RunDir, bool]:
    """The trial's run directory, created or (started before) opened for a resume; waits
    for an earlier attempt's process, which Tune stops asynchronously, to let go of it."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            if (path / CONFIG_FILE).is_file():
                return RunDir.open(path, cfg), True
            return RunDir.create(path, cfg), False
        except RunInUseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


@contextlib.contextmanager
def _logging_to(path: Path):
    """The trial's output (progress, warnings, a traceback) in its run directory's log."""
    with open(path, "a", buffering=1) as f:
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package = logging.getLogger("sarl_dist")
        package.addHandler(handler)
        package.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:
            package.removeHandler(handler)


def trial(config: dict, sweep: Sweep) -> None:
    """One run as a Tune trial: the driver of `sarl train`, its actors in this trial's
    placement group, reporting each evaluation point; the final point is reported once
    summary.json is written, so a scheduler's stop never lands on a finished run."""
    trial_id = tune.get_context().get_trial_id()
    cfg = sweep.config(config)
    path = sweep.out / sweep.run_name(config, trial_id)
    path.mkdir(parents=True, exist_ok=True)
    ended = last_point(path)
    if ended is not None:  # a fresh Tuner over a sweep directory: nothing left to run
        tune.report(ended)
        return

    def report(record: dict) -> None:
        if record["episodes_seen"] < cfg.train.episodes:
            tune.report({TIME_ATTR: record["episodes_seen"], METRIC: record["success_rate"]})

    with _logging_to(path / LOG_FILE):
        run, resume = _open_run(path, cfg)
        latest = ckpt.latest(run.checkpoints) if resume else None
        how = (
            f"continuing from {latest.name}"
            if latest
            else ("starting over" if resume else "starting")
        )
        log.info("trial %s: %s %s", trial_id, how, path)
        try:
            summary = run_training(
                cfg,
                run,
                resume=resume,
                placement=ray.util.get_current_placement_group(),
                on_eval=report,
            )
        except Exception:
            log.exception("trial %s failed", trial_id)
            raise
        if "interrupted" in summary:
            raise RunError(f"{path}: {summary['interrupted']}")
        log.info("trial %s: finished, summary.json written", trial_id)
    tune.report({TIME_ATTR: summary["episodes"], METRIC: summary["final_eval_success"]})


class EveryPoint(Repeater):
    """A Tune Searcher whose every suggestion runs at each grid point (Tune's Repeater, the
    repeat index naming the point); the searcher learns from the mean over the points."""

    def __init__(self, searcher: Searcher, points: list[dict]) -> None:
        super().__init__(searcher, repeat=len(points), set_index=True)
        self.points = points

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            config |= self.points[config.pop(TRIAL_INDEX)]
        return config


@dataclass
class Watch(tune.Callback):
    """Marks runs a scheduler stopped (stopped.json, a line in run.log) and prints the
    sweep's state: counts, episodes, elapsed time and an ETA from this session's pace."""

    sweep: Sweep
    trials: int
    episodes: int  # planned, all trials
    scheduler: str
    show: bool
    _seen: dict[str, int] = field(default_factory=dict)  # run name -> episodes so far
    _start: tuple[float, int] = (0.0, 0)  # (when, episodes) this session started
    _printed: float = 0.0

    def setup(self, **info) -> None:
        """Counts start from the run directories, so a resumed sweep shows the truth."""
        for path in self.sweep.out.iterdir():
            if (path / CONFIG_FILE).is_file():
                self._seen[path.name] = _episodes_done(path)
        self._start = (time.monotonic(), sum(self._seen.values()))

    def _name(self, trial) -> str:
        return self.sweep.trial_name(trial)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        path = self.sweep.out / self._name(trial)
        if not (path / SUMMARY_FILE).is_file():
            last = trial.last_result
            record = {"by": self.scheduler, TIME_ATTR: last[TIME_ATTR], METRIC: last[METRIC]}
            ckpt.write_atomic(path / STOPPED_FILE, json.dumps(record).encode())
            with open(path / LOG_FILE, "a") as f:
                f.write(f"{time.strftime('%F %T')} stopped by the scheduler ({record})\n")
        self._seen[path.name] = _episodes_done(path)
        self._status(trials, ended=(trial, "TERMINATED"))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._status(trials, ended=(trial, "ERROR"))

    def on_step_end(self, iteration, trials, **info) -> None:
        self._status(trials)

    def _status(self, trials, ended: tuple | None = None) -> None:
        """`ended`: (a trial, the status Tune gives it right after this callback)."""
        now = time.monotonic()
        if not self.show or (ended is None and now - self._printed < STATUS_EVERY_S):
            return
        self._printed = now
        for t in trials:  # the running ones' episodes as they are committed
            if t.status == "RUNNING" and (ended is None or t is not ended[0]):
                self._seen[self._name(t)] = _episodes_done(self.sweep.out / self._name(t))
        states = Counter(ended[1] if ended and t is ended[0] else t.status for t in trials)
        stopped = sum((self.sweep.out / self._name(t) / STOPPED_FILE).is_file() for t in trials)
        seen = sum(self._seen.values())
        elapsed = now - self._start[0]
        pace = (seen - self._start[1]) / max(elapsed, 1e-9)
        eta = f"{_duration((self.episodes - seen) / pace)}" if pace > 0 else "?"
        Console(stderr=True).print(
            f"sweep: {states['TERMINATED'] - stopped} done, {stopped} stopped early, "
            f"{states['RUNNING']} running, {self.trials - len(trials) + states['PENDING']} "
            f"waiting, {states['ERROR']} failed of {self.trials} | episodes {seen}/"
            f"{self.episodes} | elapsed {_duration(elapsed)} | ETA {eta}",
            highlight=False,
            soft_wrap=True,
        )


def _episodes_done(path: Path) -> int:
    """Training episodes behind a run: all it was configured for once it finished or was
    stopped (none are left to run), else those committed so far (its episode log, which a
    resume cuts back to the last checkpoint)."""
    if last_point(path) is not None:
        return yaml.safe_load((path / CONFIG_FILE).read_text())["train"]["episodes"]
    try:
        with open(path / EPISODES_FILE, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{s:02d}s"
