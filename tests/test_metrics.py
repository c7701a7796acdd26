"""A live run's metrics: read back from Ray's Prometheus export endpoint on the session
cluster while the run's actors are up, and from the run's TensorBoard events."""

import re
import time
import urllib.request

import pytest
import ray
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sarl_dist.runtime.driver import Driver
from sarl_dist.runtime.metrics import Rate
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.testing import tiny_config

SAMPLE = re.compile(r"^ray_(sarl_\w+)\{(.*)\} (\S+)$")


def _scrape(run: str) -> dict[str, float]:
    """This run's sarl_ samples on every node, summed over processes (name -> value)."""
    values: dict[str, float] = {}
    for node in ray.nodes():
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        for line in text.splitlines():
            if (m := SAMPLE.match(line)) and f'run="{run}"' in m[2]:
                values[m[1]] = values.get(m[1], 0.0) + float(m[3])
    return values


@pytest.mark.usefixtures("ray_cluster")
def test_a_live_run_reports_its_numbers_to_prometheus_and_tensorboard(tmp_path):
    cfg = tiny_config(
        "env.skill_chain.stages=1", "faults.vlm_failure_rate=0.3", "eval.every=8", "eval.episodes=2"
    )
    run = RunDir.create(tmp_path / "metrics-run", cfg)
    driver = Driver(cfg, run, show_progress=False)
    try:
        driver.start(None)
        summary = driver.train()
        want = {
            "sarl_episodes_total": summary["episodes"],
            "sarl_successes_total": round(summary["train_success_rate"] * summary["episodes"]),
            "sarl_learner_updates_total": summary["updates"],
            "sarl_vlm_calls_total": summary["vlm"]["calls"],
            "sarl_vlm_fallbacks_total": summary["vlm"]["fallbacks"],
            "sarl_policy_staleness_updates_count": summary["decisions"],
            "sarl_eval_success_rate": summary["final_eval_success"],
        }
        # The rates' last values, as the driver sent them to TensorBoard at the last episode:
        # the gauges must read the same numbers.
        run.writer.flush()
        events = EventAccumulator(str(run.path / "tb"))
        events.Reload()
        for gauge, tag in (
            ("sarl_decisions_per_second", "train/decisions_per_second"),
            ("sarl_learner_updates_per_second", "learner/updates_per_second"),
        ):
            want[gauge] = pytest.approx(events.Scalars(tag)[-1].value, rel=1e-4)
        # Ray exports every few seconds and drops a gauge not refreshed for two exports:
        # keep the newest value of each sample seen.
        deadline, got = time.monotonic() + 40, {}
        while time.monotonic() < deadline:
            got |= _scrape(run.path.name)
            if all(got.get(k) == v for k, v in want.items()):
                break
            time.sleep(0.5)
    finally:
        driver.stop()
    assert {k: got.get(k) for k in want} == want
    assert summary["vlm"]["fallbacks"] > 0 and summary["updates"] > 0
    assert got["sarl_decisions_per_second"] > 0
    assert got["sarl_replay_size"] == summary["replay_size"]

    tags = set(events.Tags()["scalars"])
    for tag in (
        "train/success",
        "train/successes",
        "train/decisions_per_second",
        "learner/updates",
        "learner/updates_per_second",
        "worker/staleness_updates",
        "vlm/calls",
        "vlm/fallbacks",
        "eval/success",
    ):
        assert tag in tags, tag
    successes = events.Scalars("train/successes")
    assert len(successes) == cfg.train.episodes
    assert successes[-1].value == want["sarl_successes_total"]


def test_a_rate_follows_the_recent_window():
    rate = Rate(window=10)
    assert rate(0, now=0) == 0
    assert rate(50, now=5) == 10
    assert rate(100, now=10) == 10
    assert rate(100, now=30) == 0  # stalled for a whole window: the rate says so
