"""`sarl report`: seeds pooled per task, method and every other field that differs."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from sarl_dist.config import build_config
from sarl_dist.envs import env_spec
from sarl_dist.report import results
from sarl_dist.report.results import write_report


def _run(root, name, task, method, seed, curve, finished=True, stopped=False, **learner):
    """A run directory as the driver leaves it (skill-chain task `task`)."""
    run = root / name
    run.mkdir(parents=True)
    config = {"method": method, "seed": seed, "env": {"kind": "skill_chain", "task": task}}
    if learner:
        config["learner"] = learner
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "evals.jsonl").write_text(
        "".join(json.dumps({"episodes_seen": p, "success_rate": v}) + "\n" for p, v in curve)
    )
    if finished:
        (run / "summary.json").write_text(json.dumps({"task": _task(task)}))
    if stopped:
        (run / "stopped.json").write_text(json.dumps({"by": "ASHA"}))


def _task(index):
    return env_spec(build_config({"env": {"kind": "skill_chain", "task": index}})).task


def _rows(path):
    return list(csv.DictReader(path.read_text().splitlines()))


def test_report_pools_seeds_into_mean_and_standard_error(tmp_path):
    _run(tmp_path, "a/s0", 0, "sarl", 0, [(0, 0.0), (50, 0.5), (100, 1.0)])
    _run(tmp_path, "a/s1", 0, "sarl", 1, [(0, 0.0), (50, 0.7), (100, 0.8)])
    _run(tmp_path, "a/s2", 0, "sarl", 2, [(0, 0.0), (50, 0.3)], finished=False)
    _run(tmp_path, "a/r0", 0, "random", 0, [(0, 0.1), (50, 0.1), (100, 0.2)])
    _run(tmp_path, "b/s0", 1, "sarl", 0, [(0, 0.2), (50, 0.4)])
    out = tmp_path / "report"
    md = write_report(tmp_path, out)

    a, b = _task(0), _task(1)
    rows = {
        (r["task"], r["method"], int(r["episodes_seen"])): r for r in _rows(out / "results.csv")
    }
    mid = rows[(a, "sarl", 50)]
    assert float(mid["success_mean"]) == pytest.approx(0.5)
    assert float(mid["success_se"]) == pytest.approx(0.2 / 3**0.5, abs=1e-4)  # sd 0.2, n = 3
    assert int(rows[(a, "sarl", 100)]["seeds"]) == 2  # the unfinished seed stopped at 50
    assert float(rows[(a, "random", 100)]["success_se"]) == 0.0
    assert (b, "random", 0) not in rows
    text = md.read_text()
    assert "0.50 ± 0.12 (3)" in text and f"## T1: {b}" in text
    assert "5 runs: 4 finished, 0 stopped early by the sweep's scheduler, 1 unfinished" in text
    # The final-point table: each group's last point, with the episodes it was taken at.
    assert "| T0 | sarl | 0.90 ± 0.10 (2) | 100 |" in text
    assert "| T1 | sarl | 0.40 ± 0.00 (1) | 50 |" in text
    assert (out / "learning_curves.png").stat().st_size > 5000
    assert (out / "final_success.png").stat().st_size > 5000


def test_a_swept_learner_field_is_its_own_column_and_curve_and_duplicates_are_no_seeds(
    tmp_path, monkeypatch
):
    """task x seed x method x learner.temperature, as a sweep leaves it: zero_shot (which
    reads no learner field) ran once per temperature, and one run a scheduler stopped."""
    for task in (0, 1):
        for seed in (0, 1):
            for temp in (0.03, 0.3):
                good = 0.5 + temp
                name = f"t{task}-s{seed}-sarl-{temp}"
                _run(tmp_path, name, task, "sarl", seed, [(0, 0.0), (4, good)], temperature=temp)
                zs = f"t{task}-s{seed}-zero_shot-{temp}"
                _run(tmp_path, zs, task, "zero_shot", seed, [(0, 0.0), (4, 0.0)], temperature=temp)
    _run(tmp_path, "t0-s2-sarl-0.3", 0, "sarl", 2, [(0, 0.0)], False, True, temperature=0.3)
    plotted = {}
    real_plot = results.plot_comparison
    monkeypatch.setattr(
        results,
        "plot_comparison",
        lambda series, *a: plotted.update({s.label: s for s in series}) or real_plot(series, *a),
    )
    md = write_report(tmp_path).read_text()

    cells = {
        (r["task_label"], r["method"], r["learner.temperature"], r["episodes_seen"]): r
        for r in _rows(tmp_path / "results.csv")
    }
    for task in ("T0", "T1"):  # two temperatures, two seeds each: never pooled as one
        assert cells[(task, "sarl", "0.03", "4")]["seeds"] == "2"
        assert float(cells[(task, "sarl", "0.3", "4")]["success_mean"]) == pytest.approx(0.8)
        # zero_shot ignores the temperature: one cell of 2 seeds, not 4 (its duplicates)
        assert cells[(task, "zero_shot", "–", "4")]["seeds"] == "2"
    assert cells[("T0", "sarl", "0.3", "0")]["seeds"] == "3"  # the stopped run's one point
    assert set(plotted) == {
        "sarl (greedy on Q), temperature=0.03",
        "sarl (greedy on Q), temperature=0.3",
        "zero_shot (the task sentence)",
    }
    assert set(plotted["sarl (greedy on Q), temperature=0.3"].cells) == {"T0", "T1"}
    assert "| T0 | sarl | 0.03 | 0.53 ± 0.00 (2) | 4 |" in md
    assert "| T1 | zero_shot | – | 0.00 ± 0.00 (2) | 4 |" in md
    assert "17 runs: 16 finished, 1 stopped early by the sweep's scheduler, 0 unfinished" in md
    assert "4 duplicates not pooled" in md and "## Stopped early by the scheduler" in md

    per_run = _rows(tmp_path / "runs.csv")
    assert len(per_run) == 33  # every run's every point, its config beside it
    row = next(r for r in per_run if r["run"] == "t1-s1-sarl-0.03" and r["episodes_seen"] == "4")
    assert (row["learner.temperature"], row["seed"], row["status"]) == ("0.03", "1", "finished")
    assert sum(r["pooled"] == "False" for r in per_run) == 8  # 4 duplicates x 2 points


def test_report_refuses_a_directory_without_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run"):
        write_report(tmp_path)


def test_tasks_named_by_sentence_get_short_labels_not_the_sentence_again(tmp_path):
    def run(task, index) -> results.RunResult:
        config = {"env.task": index}
        return results.RunResult(tmp_path, task, "sarl", 0, config, {0: 0.5}, {0: 0.1}, "finished")

    sentence = "open the top drawer and put the bowl inside"
    assert results.task_labels([run(sentence, sentence)]) == {sentence: "T1"}
    assert results.task_labels([run("put the bowl on the plate", 8), run(sentence, 3)]) == {
        sentence: "T3",
        "put the bowl on the plate": "T8",
    }
