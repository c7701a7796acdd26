"""A run directory: everything a run writes, in one place a resume can pick up.

config.yaml       the resolved config (the run's identity on --resume)
episodes.jsonl    one line per committed training episode
evals.jsonl       one line per evaluation point
tb/               TensorBoard events
checkpoints/      sealed checkpoints (see runtime/checkpoint.py)
episode_log/      episodes committed since the newest checkpoint (runtime/episode_log.py)
prompt_cache.json the live prompt cache, saved whenever it grows (runtime/vlm_service.py)
failures.jsonl    one line per episode that did not finish and was run again
labels.jsonl      a robot run's answers from the person, one line per episode
videos/           evaluation MP4s (eval.videos); a robot run's every episode
vlm_responses.jsonl  the VLM's answers by request key (runtime/vlm_service.py)
learning_curve.png, summary.json
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from torch.utils.tensorboard import SummaryWriter

from sarl_dist.config import Config, ConfigError, build_config, dump_config
from sarl_dist.report.plots import plot_learning_curve
from sarl_dist.runtime.checkpoint import write_atomic

CONFIG_FILE = "config.yaml"


def read_jsonl(path: Path) -> list[dict]:
    """A run's log (episodes.jsonl, evals.jsonl, ...): one record per line; none if absent."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunDir:
    def __init__(self, path: Path, cfg: Config) -> None:
        self.path = path
        self.cfg = cfg
        self.checkpoints = path / "checkpoints"
        self.episode_log = path / "episode_log"
        self.prompt_cache = path / "prompt_cache.json"
        self._writer: SummaryWriter | None = None

    @classmethod
    def create(cls, path: Path, cfg: Config) -> RunDir:
        if (path / CONFIG_FILE).exists():
            raise ConfigError(f"{path} already holds a run; use --resume {path} or another --out")
        path.mkdir(parents=True, exist_ok=True)
        write_atomic(path / CONFIG_FILE, dump_config(cfg).encode())
        return cls(path, cfg)

    @classmethod
    def open(cls, path: Path, cfg: Config | None = None) -> RunDir:
        """An existing run; `cfg`, when given, must be the config the run was started with."""
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise ConfigError(f"{path} is not a run directory (no {CONFIG_FILE})")
        saved = build_config(yaml.safe_load(config_path.read_text()))
        if cfg is not None and cfg != saved:
            raise ConfigError(
                f"{path} belongs to a different config; differing fields: "
                + ", ".join(_diff(saved.model_dump(), cfg.model_dump()))
            )
        return cls(path, saved)

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
        with open(self.path / name, "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_episode(self, summary: dict) -> None:
        self._append("episodes.jsonl", summary)
        step = summary["episode"]
        self.writer.add_scalar("train/success", float(summary["success"]), step)
        self.writer.add_scalar("train/return", sum(summary["rewards"]), step)
        self.writer.add_scalar("train/decisions", summary["decisions"], step)

    def log_failure(self, record: dict) -> None:
        self._append("failures.jsonl", record)

    def log_label(self, record: dict) -> None:
        self._append("labels.jsonl", record)

    def log_eval(self, record: dict) -> None:
        self._append("evals.jsonl", record)
        self.writer.add_scalar("eval/success", record["success_rate"], record["episodes_seen"])
        self.writer.add_scalar("eval/updates", record["updates"], record["episodes_seen"])

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def truncate_logs(self, episodes: int) -> None:
        """Keep only what the checkpoint at `episodes` knows about (a resume re-runs the rest)."""
        self._filter("episodes.jsonl", lambda r: r["episode"] < episodes)
        self._filter("evals.jsonl", lambda r: r["episodes_seen"] <= episodes)

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
        write_atomic(self.path / "summary.json", json.dumps(summary, indent=1).encode())
        if summary["eval_curve"]:
            plot_learning_curve(
                self.read_jsonl("evals.jsonl"),
                self.path / "learning_curve.png",
                title=f"{summary['method']} - {summary['task']} (seed {summary['seed']})",
            )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key} ({va!r} -> {vb!r})")
    return out
