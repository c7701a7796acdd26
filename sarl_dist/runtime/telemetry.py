"""What a run shows while it runs: the progress line, TensorBoard scalars, Ray's live
metrics (the dashboard, Prometheus), and the timing figures summary.json reports.

The Learner's and the VLM's stats are fetched for the live view at most once a second
(each robot episode: a person reads each line): fetched for every committed episode,
with many fast workers they made the driver's commit the ceiling.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from sarl_dist.jsonl import append_jsonl
from sarl_dist.runtime import compute
from sarl_dist.runtime.metrics import Rate, RunMetrics
from sarl_dist.runtime.progress import Progress
from sarl_dist.runtime.rundir import RunDir

LIVE_STATS_EVERY_S = 1.0


class Telemetry:
    def __init__(self, run: RunDir, total: int, show_progress: bool, attended: bool) -> None:
        self.run = run
        self.metrics = RunMetrics(run.path.name)
        self.progress = Progress(total, enabled=show_progress, plain=attended)
        self.every = 0.0 if attended else LIVE_STATS_EVERY_S
        self.overhead: list[float] = []
        self.staleness: list[int] = []
        self.seconds: Counter[str] = Counter()  # the training episodes' time budgets, summed
        self.vla_timing: list[dict] = []  # each episode's, where a policy server reported it
        self.decisions = 0  # in this process (the rate; the run's total is the driver's)
        self._decision_rate, self._update_rate = Rate(), Rate()
        self._live: tuple[float, dict, dict] | None = None  # (when, learner stats, VLM stats)
        self._local: Counter[str] = Counter()  # workers' own VLM hits not yet reported

    def connect(self, learner, vlm, responses) -> None:
        """The services whose stats it shows, and where the VLM's answers are stored."""
        self.learner, self.vlm, self.responses = learner, vlm, responses

    def learner_stats(self) -> dict:
        return compute.get(self.learner.stats.remote())

    def answered_locally(self, summary: dict) -> None:
        """Count the requests an episode's worker answered from its own copy of the VLM's
        answers; the VLMService gets them with the next `vlm_stats`."""
        self._local.update(summary.get("vlm_local", {}))

    def vlm_stats(self) -> dict:
        """Append the VLM's new answers to the store; the VLM meters as they stand, with the
        workers' own hits reported so far."""
        local, self._local = self._local, Counter()
        count = self.vlm.count_local.remote(local["hits"], local["rejected"])
        _, fresh, stats = compute.get(
            [count, self.vlm.drain_responses.remote(), self.vlm.stats.remote()]
        )
        append_jsonl(self.responses, fresh, durable=True)
        return stats

    def committed(self, summary: dict, successes: int) -> None:
        """A training episode the Learner has stored: logs, metrics, progress."""
        self.run.log_episode(summary)
        self.answered_locally(summary)
        self.overhead += summary["overhead_ms"]
        self.staleness += summary["staleness_updates"]
        self.seconds.update(summary["seconds"])
        self.decisions += summary["decisions"]
        now = time.monotonic()
        fresh = self._live is None or now - self._live[0] >= self.every
        if fresh:
            self._live = (now, self.learner_stats(), self.vlm_stats())
        _, learner, vlm = self._live
        m = self.metrics
        m.episodes.inc()
        if summary["success"]:
            m.successes.inc()
        for behind in summary["staleness_updates"]:
            m.staleness.observe(behind)
        scalars = {
            "train/decisions_per_second": self._decision_rate(self.decisions),
            "learner/updates_per_second": self._update_rate(learner["updates"]),
            "train/successes": successes,
            "worker/staleness_updates": max(summary["staleness_updates"]),
            "worker/overhead_ms": float(np.median(summary["overhead_ms"])),
        }
        vla = summary.get("vla_timing") or {}
        if vla:
            self.vla_timing.append(vla)
        gauges = {
            "queue_ms": m.vla_queue_ms,
            "batch_size": m.vla_batch_size,
            "compute_ms": m.vla_compute_ms,
        }
        for key, gauge in gauges.items():
            if key in vla:
                scalars[f"vla/{key}"] = vla[key]
                gauge.set(vla[key])
        m.decisions_per_second.set(scalars["train/decisions_per_second"])
        m.updates_per_second.set(scalars["learner/updates_per_second"])
        if fresh:  # the services' own figures change only when fetched
            scalars |= {
                "learner/loss": learner["loss"],
                "learner/updates": learner["updates"],
                "learner/replay_size": learner["replay_size"],
                "vlm/calls": vlm["calls"],
                "vlm/cache_hits": vlm["cache_hits"],
                "vlm/fallbacks": vlm["fallbacks"],
                "vlm/latency_ms_p95": vlm["latency_ms_p95"],
            }
        self.run.log_scalars(summary["episode"], scalars)
        self.progress.episode(summary, learner, vlm)

    def evaluated(self, record: dict) -> None:
        self.metrics.eval_success.set(record["success_rate"])
        self.run.log_eval(record)
        self.progress.evaluation(record)

    def timing(self, worker_wait: list[float]) -> dict:
        """The summary's per-decision figures: where a worker's time went (core.rollout's
        budget), framework overhead, policy staleness, and how long workers waited for the
        driver between episodes."""
        overhead = np.asarray(self.overhead or [float("nan")])
        staleness = np.asarray(self.staleness or [0])
        wait_ms = 1e3 * np.asarray(worker_wait)
        per = 1e3 / max(self.decisions, 1)
        return {
            "decision_ms": {item: round(s * per, 2) for item, s in self.seconds.items()},
            "overhead_ms_p50": float(np.nanpercentile(overhead, 50)),
            "overhead_ms_p95": float(np.nanpercentile(overhead, 95)),
            "staleness_updates_p50": float(np.percentile(staleness, 50)),
            "staleness_updates_p95": float(np.percentile(staleness, 95)),
            "staleness_updates_max": int(staleness.max()),
            # None where no worker ran two training episodes in a row (one robot, attended)
            "worker_wait_ms_p50": float(np.percentile(wait_ms, 50)) if wait_ms.size else None,
            "worker_wait_ms_p95": float(np.percentile(wait_ms, 95)) if wait_ms.size else None,
            **self._vla_figures(),
        }

    def _vla_figures(self) -> dict:
        """The policy servers' figures over the episodes' (None where no server reported
        them): median queue wait and compute, mean batch size."""

        def over_episodes(key: str, summary) -> float | None:
            values = [t[key] for t in self.vla_timing if key in t]
            return float(summary(values)) if values else None

        return {
            "vla_queue_ms_p50": over_episodes("queue_ms", np.median),
            "vla_compute_ms_p50": over_episodes("compute_ms", np.median),
            "vla_batch_size": over_episodes("batch_size", np.mean),
        }

    def close(self) -> None:
        self.progress.close()
