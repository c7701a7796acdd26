"""A run's live metrics through Ray's metrics API, so the Ray dashboard (and a Prometheus
scraping the nodes' metrics export port) shows a run while it runs. Every metric is
tagged with the run's name (`run`); Ray exports them prefixed `ray_`, counters with a
`_total` suffix. The driver, the Learner and the VLMService each record what they see;
the same numbers go to TensorBoard through RunDir. Names and meanings: docs/scaling.md.
"""

from __future__ import annotations

import time
from collections import deque

from ray.util.metrics import Counter, Gauge, Histogram

STALENESS_BOUNDS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]


class RunMetrics:
    def __init__(self, run: str) -> None:
        tags = {"run": run}

        def counter(name: str, description: str, *keys: str) -> Counter:
            metric = Counter(name, description, tag_keys=("run", *keys))
            return metric.set_default_tags(tags)

        def gauge(name: str, description: str) -> Gauge:
            return Gauge(name, description, tag_keys=("run",)).set_default_tags(tags)

        # the driver
        self.episodes = counter("sarl_episodes", "Training episodes committed.")
        self.successes = counter("sarl_successes", "Committed training episodes that succeeded.")
        self.decisions_per_second = gauge(
            "sarl_decisions_per_second", "Semantic decisions per second, all workers (30 s)."
        )
        self.updates_per_second = gauge(
            "sarl_learner_updates_per_second", "Learner gradient steps per second (30 s)."
        )
        self.staleness = Histogram(
            "sarl_policy_staleness_updates",
            "Gradient steps the acting policy was behind the Learner, per decision.",
            boundaries=STALENESS_BOUNDS,
            tag_keys=("run",),
        ).set_default_tags(tags)
        self.eval_success = gauge("sarl_eval_success_rate", "Greedy success rate, last eval.")
        self.faults = counter(
            "sarl_episode_faults", "Episodes cut short, by kind (docs/reliability.md).", "kind"
        )
        # the policy servers, as the workers' replies report them (server_timing)
        self.vla_queue_ms = gauge(
            "sarl_vla_queue_ms", "Median wait of a VLA request for its batch, last episode."
        )
        self.vla_batch_size = gauge(
            "sarl_vla_batch_size", "Mean batch a VLA request was served in, last episode."
        )
        self.vla_compute_ms = gauge(
            "sarl_vla_compute_ms", "Median time of the policy call serving a VLA request."
        )
        # the Learner
        self.updates = counter("sarl_learner_updates", "Learner gradient steps.")
        self.loss = gauge("sarl_learner_loss", "TD loss of the last gradient step.")
        self.replay_size = gauge("sarl_replay_size", "Transitions in the replay buffer.")
        # the VLMService
        self.vlm_calls = counter("sarl_vlm_calls", "Calls to the VLM backend.")
        self.vlm_cache_hits = counter("sarl_vlm_cache_hits", "Proposals answered from memory.")
        self.vlm_fallbacks = counter(
            "sarl_vlm_fallbacks", "Proposals answered from the prompt cache (VLM failed)."
        )


class Rate:
    """Per-second rate of a growing count over about the last `window` seconds: a live
    figure for a gauge, where a whole-run average would hide a slowdown."""

    def __init__(self, window: float = 30.0) -> None:
        self.window = window
        self._points: deque[tuple[float, float]] = deque()

    def __call__(self, count: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._points.append((now, count))
        while len(self._points) > 2 and now - self._points[1][0] >= self.window:
            self._points.popleft()
        start, first = self._points[0]
        return (count - first) / (now - start) if now > start else 0.0
