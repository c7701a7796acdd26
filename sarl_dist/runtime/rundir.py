"""A run directory: everything a run writes, in one place a resume can pick up.

config.yaml       the resolved config (the run's identity on --resume)
episodes.jsonl    one line per committed training episode
evals.jsonl       one line per evaluation point
eval_episodes.jsonl  one line per evaluation episode (eval_point, eval_index, prompts, ...)
tb/               TensorBoard events
checkpoints/      sealed checkpoints (see runtime/checkpoint.py)
episode_log/      episodes committed since the newest checkpoint (runtime/episode_log.py)
prompt_cache.json the live prompt cache, saved whenever it grows (runtime/vlm_service.py)
failures.jsonl    one line per episode that did not finish and was run again
labels.jsonl      a robot run's answers from the person, one line per episode
videos/           evaluation MP4s (eval.videos); a robot run's every episode
vlm_responses.jsonl  the VLM's answers by request key (runtime/vlm_service.py)
learning_curve.png, summary.json
run.lock          who drives the run (pid, host); locked while a driver has it open
run.log           a sweep's trial: the driver's output (progress, warnings, errors)
stopped.json      a sweep's trial a Tune scheduler stopped early: where, and by what

One driver per run directory: creating or opening one takes an exclusive OS lock
(flock) on run.lock for as long as the driver runs; the OS releases it when the process
ends, however it ends, so a killed driver never blocks its own resume, and a second
driver is refused with the holder's pid and host. Creating a run takes the lock before
it looks for an existing config.yaml, so two drivers racing for one new directory cannot
both start a run there.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path

import yaml
from torch.utils.tensorboard import SummaryWriter

from sarl_dist.config import (
    Config,
    ConfigError,
    apply_overrides,
    build_config,
    dict_changes,
    dump_config,
)
from sarl_dist.jsonl import append_jsonl, read_jsonl
from sarl_dist.report.plots import plot_learning_curve
from sarl_dist.run_files import CONFIG_FILE, EPISODES_FILE, LOCK_FILE, SUMMARY_FILE
from sarl_dist.runtime.checkpoint import CheckpointError, write_atomic


class RunInUseError(ConfigError):
    """Another driver holds the run directory."""


def _lock(path: Path) -> int:
    """An exclusive lock on the run directory, with this process named in it as the holder."""
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip()
        os.close(fd)
        raise RunInUseError(
            f"{path} is in use by another driver ({holder or 'holder not yet recorded'}); "
            "one driver per run directory: wait for it or stop it first"
        ) from None
    os.ftruncate(fd, 0)
    holder = f"pid {os.getpid()} on host {socket.gethostname()}, since {time.strftime('%F %T')}"
    os.write(fd, holder.encode())
    return fd


def config_digest(cfg: Config) -> str:
    """The config's identity, recorded in every checkpoint."""
    return hashlib.sha256(dump_config(cfg).encode()).hexdigest()


def config_changes(saved: Config, cfg: Config) -> list[str]:
    """The fields where `cfg` differs from `saved`, with both values."""
    return dict_changes(saved.model_dump(), cfg.model_dump())


class RunDir:
    def __init__(self, path: Path, cfg: Config, lock: int) -> None:
        self.path = path
        self.cfg = cfg
        self.checkpoints = path / "checkpoints"
        self.episode_log = path / "episode_log"
        self.prompt_cache = path / "prompt_cache.json"
        self._writer: SummaryWriter | None = None
        self._lock: int | None = lock

    @classmethod
    def create(cls, path: Path, cfg: Config) -> RunDir:
        path.mkdir(parents=True, exist_ok=True)
        lock = _lock(path)
        if (path / CONFIG_FILE).exists():
            os.close(lock)
            raise ConfigError(f"{path} already holds a run; use --resume {path} or another --out")
        write_atomic(path / CONFIG_FILE, dump_config(cfg).encode())
        return cls(path, cfg, lock)

    @classmethod
    def open(cls, path: Path, cfg: Config | None = None) -> RunDir:
        """An existing run; `cfg`, when given, must be the config the run was started with."""
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise ConfigError(f"{path} is not a run directory (no {CONFIG_FILE})")
        lock = _lock(path)
        try:
            saved = build_config(yaml.safe_load(config_path.read_text()))
            if cfg is not None and cfg != saved:
                raise ConfigError(
                    f"{path} belongs to a different config; differing fields: "
                    + ", ".join(config_changes(saved, cfg))
                )
        except BaseException:
            os.close(lock)
            raise
        return cls(path, saved, lock)

    def extend(self, episodes: int) -> None:
        """Raise train.episodes (`sarl train --resume DIR --extend-to N`): the one change a
        resume accepts, and only when asked for by name."""
        if episodes < self.cfg.train.episodes:
            raise ConfigError(
                f"--extend-to {episodes}: the run is already configured for "
                f"{self.cfg.train.episodes} episodes"
            )
        data = apply_overrides(self.cfg.model_dump(mode="json"), [f"train.episodes={episodes}"])
        self.cfg = build_config(data)
        write_atomic(self.path / CONFIG_FILE, dump_config(self.cfg).encode())

    def check_resumed_config(self, checkpoint: Path, meta: dict, extend: bool) -> None:
        """Refuse to continue a checkpoint under a config other than the one it was made
        with (an edited config.yaml), listing the changed fields; with `extend`, a larger
        train.episodes is allowed."""
        if meta.get("config_sha256") in (None, config_digest(self.cfg)):
            return  # the same config (None: a checkpoint from before configs were recorded)
        saved = build_config(yaml.safe_load((checkpoint / CONFIG_FILE).read_text()))
        changes = [
            change
            for change in config_changes(saved, self.cfg)
            if not (
                extend
                and change.startswith("train.episodes ")
                and self.cfg.train.episodes >= saved.train.episodes
            )
        ]
        if changes:
            raise CheckpointError(
                f"{self.path / CONFIG_FILE} changed since checkpoint {checkpoint.name}: "
                + ", ".join(changes)
                + "; a resume continues the run as it was configured (only train.episodes "
                "may grow, with --extend-to N)"
            )

    @property
    def writer(self) -> SummaryWriter:
        if self._writer is None:
            self._writer = SummaryWriter(str(self.path / "tb"))
        return self._writer

    def checkpoint_dir(self, episodes: int) -> Path:
        directory = self.checkpoints / f"ep-{episodes:07d}"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _append(self, name: str, record: dict) -> None:
        append_jsonl(self.path / name, [record])

    def log_episode(self, summary: dict) -> None:
        self._append(EPISODES_FILE, summary)
        step = summary["episode"]
        self.writer.add_scalar("train/success", float(summary["success"]), step)
        self.writer.add_scalar("train/return", sum(summary["rewards"]), step)
        self.writer.add_scalar("train/decisions", summary["decisions"], step)

    def log_failure(self, record: dict) -> None:
        self._append("failures.jsonl", record)

    def log_label(self, record: dict) -> None:
        self._append("labels.jsonl", record)

    def log_eval_episode(self, record: dict) -> None:
        """One evaluation episode, by its evaluation point and index (eval_episodes.jsonl)."""
        self._append("eval_episodes.jsonl", record)

    def log_eval(self, record: dict) -> None:
        self._append("evals.jsonl", record)
        self.writer.add_scalar("eval/success", record["success_rate"], record["episodes_seen"])
        self.writer.add_scalar("eval/updates", record["updates"], record["episodes_seen"])

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def truncate_logs(self, episodes: int | None) -> None:
        """Keep only what the checkpoint at `episodes` knows about (a resume re-runs the
        rest); None: no checkpoint, so nothing (the run starts over, its evaluation at 0
        included)."""
        known = -1 if episodes is None else episodes
        self._filter(EPISODES_FILE, lambda r: r["episode"] < known)
        self._filter("evals.jsonl", lambda r: r["episodes_seen"] <= known)
        self._filter("eval_episodes.jsonl", lambda r: r["eval_point"] <= known)

    def _filter(self, name: str, keep) -> None:
        path = self.path / name
        if not path.exists():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if keep(json.loads(line))]
        write_atomic(path, "".join(line + "\n" for line in kept).encode())

    def read_jsonl(self, name: str) -> list[dict]:
        return read_jsonl(self.path / name)

    def write_summary(self, summary: dict) -> None:
        write_atomic(self.path / SUMMARY_FILE, json.dumps(summary, indent=1).encode())
        if summary["eval_curve"]:
            plot_learning_curve(
                self.read_jsonl("evals.jsonl"),
                self.path / "learning_curve.png",
                title=f"{summary['method']} - {summary['task']} (seed {summary['seed']})",
            )

    def close(self) -> None:
        """Flush the logs and release the run directory to the next driver."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
