"""`sarl report`: seeds pooled per (task, method) at each evaluation point."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from sarl_dist.config import build_config
from sarl_dist.envs import env_spec
from sarl_dist.report.results import write_report


def _run(root, name, task, method, seed, curve, finished=True):
    """A run directory as the driver leaves it (skill-chain task `task`)."""
    run = root / name
    run.mkdir(parents=True)
    config = {"method": method, "seed": seed, "env": {"kind": "skill_chain", "task": task}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "evals.jsonl").write_text(
        "".join(json.dumps({"episodes_seen": p, "success_rate": v}) + "\n" for p, v in curve)
    )
    if finished:
        task_text = env_spec(build_config(config)).task
        (run / "summary.json").write_text(json.dumps({"task": task_text}))


def test_report_pools_seeds_into_mean_and_standard_error(tmp_path):
    _run(tmp_path, "a/s0", 0, "sarl", 0, [(0, 0.0), (50, 0.5), (100, 1.0)])
    _run(tmp_path, "a/s1", 0, "sarl", 1, [(0, 0.0), (50, 0.7), (100, 0.8)])
    _run(tmp_path, "a/s2", 0, "sarl", 2, [(0, 0.0), (50, 0.3)], finished=False)
    _run(tmp_path, "a/r0", 0, "random", 0, [(0, 0.1), (50, 0.1), (100, 0.2)])
    _run(tmp_path, "b/s0", 1, "sarl", 0, [(0, 0.2), (50, 0.4)])
    out = tmp_path / "report"
    md = write_report(tmp_path, out)

    a, b = (
        env_spec(build_config({"env": {"kind": "skill_chain", "task": t}})).task for t in (0, 1)
    )
    rows = {
        (r["task"], r["method"], int(r["episodes_seen"])): r
        for r in csv.DictReader((out / "results.csv").read_text().splitlines())
    }
    mid = rows[(a, "sarl", 50)]
    assert float(mid["success_mean"]) == pytest.approx(0.5)
    assert float(mid["success_se"]) == pytest.approx(0.2 / 3**0.5, abs=1e-4)  # sd 0.2, n = 3
    assert int(rows[(a, "sarl", 100)]["seeds"]) == 2  # the unfinished seed stopped at 50
    assert float(rows[(a, "random", 100)]["success_se"]) == 0.0
    assert (b, "random", 0) not in rows
    text = md.read_text()
    assert "0.50 ± 0.12 (3)" in text and f"## {b}" in text
    # The final-point table: each method's last point, with the episodes it was taken at.
    assert f"| {a} | 0.90 ± 0.10 (2) [100] | 0.20 ± 0.00 (1) [100] |" in text
    assert f"| {b} | 0.40 ± 0.00 (1) [50] |  |" in text
    assert (out / "learning_curves.png").stat().st_size > 5000
    assert (out / "final_success.png").stat().st_size > 5000


def test_report_refuses_a_directory_without_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run"):
        write_report(tmp_path)
