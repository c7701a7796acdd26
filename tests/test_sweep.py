"""`sarl sweep`: every grid point a full run, as a Ray Tune trial in the run's own placement
group; stopped with Ctrl-C and resumed; refused early when it cannot run."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
import yaml
from ray.tune.search._mock import _MockSearcher

from sarl_dist.config import ConfigError
from sarl_dist.experiments.sweep import load_sweep, plan, run_sweep
from sarl_dist.experiments.trial import EveryPoint, Watch
from sarl_dist.report.results import write_report
from sarl_dist.runtime import checkpoint as ckpt
from sarl_dist.testing import FAST

REPO = Path(__file__).resolve().parents[1]
# One worker and small fractional CPUs: two runs at once on a 2-CPU local Ray.
BASE = {
    **FAST,
    "env": {"kind": "skill_chain"},
    "vlm": {"backend": "skill_chain"},
    "runtime": {"num_workers": 1, "worker_cpus": 0.25, "learner_cpus": 0.25, "vlm_cpus": 0.25},
}
BUDGET = ["train.episodes=4", "train.checkpoint_every=2", "eval.every=2", "eval.episodes=2"]


def _sweep_file(tmp_path, name="sweep.yaml", **spec):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    spec = {"base": "base.yaml", "set": BUDGET, **spec}
    spec.setdefault("grid", {"env.task": [0, 1], "method": ["sarl", "random"]})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_sweep_plans_the_filtered_product_and_refuses_bad_files_early(tmp_path):
    grid = {"seed": [0, 1], "method": ["sarl", "zero_shot"], "learner.temperature": [0.1, 1.0]}
    only = [{"method": "sarl"}, {"method": "zero_shot", "learner.temperature": 0.1}]
    runs = plan(load_sweep(_sweep_file(tmp_path, grid=grid, only=only)))
    assert [r.name for r in runs] == [
        "seed0-methodsarl-temperature0.1",
        "seed0-methodsarl-temperature1.0",
        "seed0-methodzero_shot-temperature0.1",
        "seed1-methodsarl-temperature0.1",
        "seed1-methodsarl-temperature1.0",
        "seed1-methodzero_shot-temperature0.1",
    ]
    assert {(r.cfg.seed, r.cfg.method, r.cfg.learner.temperature) for r in runs} == {
        (s, m, t) for s in (0, 1) for m, t in [("sarl", 0.1), ("sarl", 1.0), ("zero_shot", 0.1)]
    }
    excluded = plan(load_sweep(_sweep_file(tmp_path, grid=grid, exclude=[{"seed": 1}])))
    assert {r.cfg.seed for r in excluded} == {0} and len(excluded) == 4

    bad = {
        "method": dict(grid={"method": ["sarl", "telepathy"]}),
        "exclude\\[0\\]: method=\\['zero-shot'\\] is not in the grid": dict(
            grid=grid, exclude=[{"method": "zero-shot"}]
        ),
        "only\\[0\\]: learner.lr is not a grid field": dict(grid=grid, only=[{"learner.lr": 1}]),
        "learner.lrr": dict(grid=grid, search={"space": {"learner.lrr": {"uniform": [0, 1]}}}),
        "space.learner.lr: give one of": dict(
            grid=grid, search={"space": {"learner.lr": {"gaussian": [0, 1]}}}
        ),
        "search.algorithm: cannot import": dict(
            grid=grid,
            search={"space": {"learner.lr": {"choice": [1e-3]}}, "algorithm": "no_such:Algo"},
        ),
        "sheduler": dict(grid=grid, sheduler={"kind": "asha"}),
        "only/exclude leave no run": dict(grid=grid, only=[{"seed": 0}], exclude=[{"seed": 0}]),
    }
    bad["scheduler.kind: ray.tune:Tuner is not a TrialScheduler"] = dict(
        grid=grid, scheduler={"kind": "ray.tune:Tuner"}
    )
    bad["scheduler.options: asha"] = dict(
        grid=grid, scheduler={"kind": "asha", "options": {"grace": 1}}
    )
    for message, spec in bad.items():
        with pytest.raises(ConfigError, match=message):  # before Ray starts or a file is written
            run_sweep(load_sweep(_sweep_file(tmp_path, **spec)), tmp_path / "out", None, False)
    assert not (tmp_path / "out").exists()


def test_a_search_algorithm_runs_each_suggestion_at_every_grid_point(tmp_path):
    points = [{"seed": 0}, {"seed": 1}]
    search = EveryPoint(_MockSearcher(metric="eval_success", mode="max"), points)
    configs = [search.suggest(f"t{i}") for i in range(4)]
    assert [c["seed"] for c in configs] == [0, 1, 0, 1]
    assert all(c["test_variable"] == 2 and "__trial_index__" not in c for c in configs)


def test_the_status_line_counts_each_running_runs_episodes_as_they_are_committed(tmp_path, capsys):
    """Not only at its evaluation points (every 50 episodes: `0/300` for many minutes)."""
    runs = {"a": 35, "b": 0}
    for name, n in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("train:\n  episodes: 100\n")
        (tmp_path / name / "episodes.jsonl").write_text('{"episode": 0}\n' * n)
    sweep = SimpleNamespace(out=tmp_path, trial_name=lambda trial: trial.name)
    watch = Watch(sweep, trials=3, episodes=300, scheduler="fifo", show=True)
    watch.setup()
    trials = [SimpleNamespace(name=n, status="RUNNING") for n in runs]
    with open(tmp_path / "a" / "episodes.jsonl", "a") as f:
        f.write('{"episode": 35}\n' * 5)
    watch._status(trials)
    assert "2 running, 1 waiting, 0 failed of 3 | episodes 40/300" in capsys.readouterr().err
    summary = {"episodes": 100, "final_eval_success": 0.5}
    (tmp_path / "b" / "summary.json").write_text(json.dumps(summary))
    watch.on_trial_complete(0, trials, trials[1])  # a finished run: all its episodes
    assert "1 done" in (err := capsys.readouterr().err) and "episodes 140/300" in err


@pytest.mark.usefixtures("ray_cluster")
def test_runs_that_ask_for_a_gpu_on_a_cpu_cluster_are_refused_at_once(tmp_path):
    path = _sweep_file(tmp_path, set=[*BUDGET, "runtime.worker_gpus=0.5"])
    with pytest.raises(ConfigError) as refused:
        run_sweep(load_sweep(path), tmp_path / "out", None, resume=False, show_progress=False)
    message = str(refused.value)
    assert "0 GPU" in message and "each run needs 0.75 CPU, 0.5 GPU" in message
    assert "EnvWorker (0.25 CPU, 0.5 GPU)" in message and "short of GPU;" in message
    assert "runtime.worker_gpus, vla.server_gpus" in message
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


@pytest.mark.usefixtures("ray_cluster")
def test_a_scheduler_stops_a_weak_run_in_the_trials_own_placement_group(tmp_path):
    """ASHA stops zero_shot (0 successes) at its first rung after oracle passed it; the
    stopped run says so and the report does not count it finished. Both runs' actors used
    their trial's placement group: no run made one of its own."""
    path = _sweep_file(
        tmp_path,
        grid={"method": ["oracle", "zero_shot"]},
        max_concurrent=1,
        scheduler={"kind": "asha", "options": {"grace_period": 2}},
    )
    out = tmp_path / "out"
    result = run_sweep(load_sweep(path), out, None, resume=False, show_progress=False)
    assert result.status == {"methodoracle": "done", "methodzero_shot": "stopped"}
    stopped = json.loads((out / "methodzero_shot" / "stopped.json").read_text())
    assert stopped == {"by": "AsyncHyperBandScheduler", "episodes_seen": 2, "eval_success": 0.0}
    assert not (out / "methodzero_shot" / "summary.json").exists()
    assert "stopped by the scheduler" in (out / "methodzero_shot" / "run.log").read_text()
    assert json.loads((out / "methodoracle" / "summary.json").read_text())["nodes"]
    assert (out / "_tune" / "methodoracle" / "progress.csv").is_file()  # Tune's own loggers
    names = {f"sarl-{run}" for run in result.status}  # what the driver names its own
    assert not [g for g in ray.util.placement_group_table().values() if g["name"] in names]
    text = write_report(out).read_text()
    assert "2 runs: 1 finished, 1 stopped early by the sweep's scheduler" in text


def _sarl(*args):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return [sys.executable, "-m", "sarl_dist.cli.main", *args], env


def _started(run: Path) -> list[str]:
    """What each trial that ran this run did, from its run.log."""
    log = (run / "run.log").read_text() if (run / "run.log").is_file() else ""
    return re.findall(r"trial \S+: (starting over|starting|continuing from \S+)", log)


def _checkpointed(run: Path) -> list[str]:
    """The episodes.jsonl records of the episodes the run's last checkpoint holds."""
    latest = ckpt.latest(run / "checkpoints")
    held = ckpt.episodes_of(latest) if latest is not None else 0
    log = (run / "episodes.jsonl").read_text().splitlines() if held else []
    return [x for x in log if json.loads(x)["episode"] < held]


def _resumes_as(run: Path) -> list[str]:
    """How a resumed trial of an interrupted run starts: continuing its run directory."""
    latest = ckpt.latest(run / "checkpoints")
    if latest is not None:
        return [f"continuing from {latest.name}"]
    return ["starting over" if (run / "config.yaml").is_file() else "starting"]


def test_ctrl_c_then_resume_runs_each_unfinished_trial_once_and_the_report_splits_the_field(
    tmp_path,
):
    """A real `sarl sweep` over task x seed x method x learner.temperature (zero_shot only at
    one temperature), SIGINT once some runs finished and others started, then --resume."""
    grid = {
        "env.task": [0, 1],
        "seed": [0, 1],
        "method": ["sarl", "zero_shot"],
        "learner.temperature": [0.1, 1.0],
    }
    only = [{"method": "sarl"}, {"method": "zero_shot", "learner.temperature": 0.1}]
    sweep = _sweep_file(tmp_path, grid=grid, only=only)
    out = tmp_path / "out"
    command, env = _sarl("sweep", str(sweep), "--out", str(out), "--no-progress")
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list(out.glob("task*"))
        done = [p for p in runs if (p / "summary.json").is_file()]
        if done and any(ckpt.latest(p / "checkpoints") for p in runs if p not in done):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout
    assert f"interrupted; continue with: sarl sweep {sweep} --out {out} --resume" in stdout
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    assert finished and len(finished) < 12
    expected = {  # each run's trial starts so far, and after the resume
        run.name: _started(run) + ([] if run.name in finished else _resumes_as(run))
        for run in out.glob("task*")
    }
    kept = {run.name: _checkpointed(run) for run in out.glob("task*")}
    assert any(kept.values())

    again = subprocess.run(
        _sarl("sweep", str(sweep), "--out", str(out), "--no-progress", "--resume")[0],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    counts = json.loads(next(x for x in again.stdout.splitlines() if x.startswith('{"trials"')))
    assert counts == {
        "trials": 12,
        "ran": 12 - len(finished),
        "done": 12,
        "stopped": 0,
        "unfinished": 0,
        "failed": {},
    }
    runs = sorted(p for p in out.glob("task*") if p.is_dir())
    assert len(runs) == 12
    for run in runs:
        episodes = (run / "episodes.jsonl").read_text().splitlines()
        assert sorted(json.loads(x)["episode"] for x in episodes) == [0, 1, 2, 3], run.name
        # every trial not finished ran exactly once more, continuing its run directory: the
        # episodes its checkpoint holds are the very records written before the interruption
        assert _started(run) == expected.get(run.name, ["starting"]), run.name
        assert set(kept.get(run.name, [])) <= set(episodes), run.name
        if run.name in finished:
            assert (run / "summary.json").stat().st_mtime_ns == finished[run.name]

    cells = {
        (r["task_label"], r["method"], r["learner.temperature"]): r
        for r in csv.DictReader((out / "results.csv").read_text().splitlines())
        if r["episodes_seen"] == "4"
    }
    assert set(cells) == {
        (t, m, temp)
        for t in ("T0", "T1")
        for m, temp in [("sarl", "0.1"), ("sarl", "1.0"), ("zero_shot", "–")]
    }
    assert {c["seeds"] for c in cells.values()} == {"2"}

    grid["learner.temperature"] = [0.1, 3.0]  # a changed sweep file is refused on resume
    _sweep_file(tmp_path, grid=grid, only=only)
    changed = subprocess.run(
        _sarl("sweep", str(sweep), "--out", str(out), "--no-progress", "--resume")[0],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert changed.returncode == 2
    assert "grid.learner.temperature ([0.1, 1.0] -> [0.1, 3.0])" in changed.stderr
