"""`sarl sweep`: every grid point a full run on the shared Ray cluster, resumable."""

from __future__ import annotations

import json

import pytest
import yaml

from sarl_dist.config import ConfigError
from sarl_dist.experiments.sweep import load_sweep, plan, run_sweep
from sarl_dist.report.results import write_report
from sarl_dist.testing import FAST


def _sweep_file(tmp_path, **extra):
    base = {**FAST, "runtime": {**FAST["runtime"], "num_workers": 1}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {
        "base": "base.yaml",
        "set": ["train.episodes=4", "eval.every=4", "eval.episodes=2"],
        "grid": {"env.task": [0, 1], "method": ["sarl", "random"]},
        **extra,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_sweep(path)


def test_a_sweep_plans_the_cross_product_and_rejects_bad_values_early(tmp_path):
    runs = plan(_sweep_file(tmp_path))
    assert [r.name for r in runs] == [
        "task0-methodsarl",
        "task0-methodrandom",
        "task1-methodsarl",
        "task1-methodrandom",
    ]
    assert {(r.cfg.env.task, r.cfg.method, r.cfg.train.episodes) for r in runs} == {
        (t, m, 4) for t in (0, 1) for m in ("sarl", "random")
    }
    with pytest.raises(ConfigError, match="method"):
        plan(_sweep_file(tmp_path, grid={"method": ["sarl", "telepathy"]}))


@pytest.mark.usefixtures("ray_cluster")
def test_a_sweep_runs_concurrently_and_resume_redoes_only_what_is_missing(tmp_path):
    spec, out = _sweep_file(tmp_path), tmp_path / "out"
    results = run_sweep(spec, out, None, resume=False, show_progress=False)
    assert sorted(results) == [r.name for r in sorted(plan(spec), key=lambda r: r.name)]
    assert all(r["episodes"] == 4 and r["nodes"] for r in results.values())
    finished = {n: (out / n / "summary.json").stat().st_mtime_ns for n in results}

    # a stopped sweep: one run never finished, another never started
    (out / "task1-methodsarl" / "summary.json").unlink()
    for path in sorted((out / "task0-methodrandom").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(spec, out, None, resume=False, show_progress=False)
    again = run_sweep(spec, out, None, resume=True, show_progress=False)
    assert sorted(again) == ["task0-methodrandom", "task1-methodsarl"]
    for name in ("task0-methodsarl", "task1-methodrandom"):
        assert (out / name / "summary.json").stat().st_mtime_ns == finished[name]
    for name in again:
        episodes = [json.loads(x) for x in (out / name / "episodes.jsonl").read_text().splitlines()]
        assert sorted(e["episode"] for e in episodes) == [0, 1, 2, 3]

    report = write_report(out).read_text()
    rows = [line.split(" |")[0] for line in report.splitlines()]
    assert rows.count("| sarl") == 2 and rows.count("| random") == 2  # one row per task
