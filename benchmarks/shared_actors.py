"""How many workers one run's shared parts can feed, measured on the skill chain.

Every worker goes through three serial points: the VLMService (a proposal per decision),
the Learner (a weights poll per decision, an `add_episode` per episode, with its episode
log written to disk) and the driver (a commit per episode). Scaling out stops at the first
one to saturate, so each one's capacity is measured here on this machine and divided by
what one worker asks of it, measured in the same run:

1. one worker trains for `--episodes` episodes (configs/skill_chain.yaml, Learner idle
   so the demand is the loop's own): its decisions per second and per episode, and the
   driver loop's CPU per committed episode (summary `driver_cpu_ms_per_episode`);
2. a fresh VLMService and Learner, built from the same config, are sent the same calls
   with `--inflight` of them outstanding at a time (as from that many workers) for
   `--seconds` each: the scenes are the skill chain's, the episode a real one from step 1.

Workers fed = capacity / one worker's demand: the worker count past which that part, not
the workers, sets a run's pace. It needs only a core per shared actor, so a 2-core machine
can say what a 64-core one would hit first.

    python benchmarks/shared_actors.py [--episodes 60] [--inflight 16] [--seconds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray
from overhead import bench_config  # a sibling script: benchmarks/ is on sys.path

from sarl_dist.envs import make_env
from sarl_dist.report.bench import emit
from sarl_dist.runtime.driver import run_training
from sarl_dist.runtime.learner import Learner
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.runtime.vlm_service import VLMService
from sarl_dist.runtime.worker import EnvWorker


def capacity(call, inflight: int, seconds: float) -> float:
    """Calls answered per second with `inflight` of them always outstanding."""
    refs = [call(i) for i in range(inflight)]
    sent, answered, start = inflight, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        ready, refs = ray.wait(refs, num_returns=1)
        ray.get(ready)
        answered += 1
        refs.append(call(sent))
        sent += 1
    rate = answered / (time.perf_counter() - start)
    ray.get(refs)  # leave nothing running into the next measurement
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    cfg = bench_config(1, args.episodes, learning=False)
    with tempfile.TemporaryDirectory() as tmp:
        one = run_training(cfg, RunDir.create(Path(tmp) / "one", cfg), show_progress=False)
        per_episode = one["decisions"] / one["episodes"]
        decisions = one["decisions_per_second"]

        vlm = ray.remote(VLMService).remote(cfg, make_env(cfg).spec.task)
        learner = ray.remote(Learner).options(max_concurrency=8)
        learner = learner.remote(cfg, cfg.cache.capacity, None, str(Path(tmp) / "log"))
        env = make_env(cfg)
        scenes = []
        for seed in range(64):
            env.reset(seed)
            scenes.append(env.observe().scene)  # sent by value, as a worker sends it
        texts = ray.get(vlm.prompt_texts.remote())
        worker = ray.remote(EnvWorker).remote(cfg, 0, learner, vlm, texts)
        episode = ray.get(worker.run_episode.remote(0, 0, False)[1])
        held = ray.get(learner.poll.remote(None))[3][0].hex()
        measured = {
            "VLMService.propose": (
                capacity(lambda i: vlm.propose.remote(scenes[i % 64]), args.inflight, args.seconds),
                decisions,
            ),
            "Learner.poll": (
                capacity(lambda i: learner.poll.remote(held), args.inflight, args.seconds),
                decisions,
            ),
            "Learner.add_episode": (
                capacity(
                    lambda i: learner.add_episode.remote(1 + i, episode),
                    args.inflight,
                    args.seconds,
                ),
                decisions / per_episode,
            ),
            "driver commit": (1e3 / one["driver_cpu_ms_per_episode"], decisions / per_episode),
        }
    ray.shutdown()
    rows = [
        {
            "serial_point": name,
            "capacity_per_s": round(cap, 1),
            "one_worker_demand_per_s": round(demand, 1),
            "workers_fed": round(cap / demand, 1),
        }
        for name, (cap, demand) in measured.items()
    ]
    emit(
        f"shared actors: capacity against one worker's demand ({decisions:.1f} decisions/s, "
        f"{per_episode:.1f} decisions per episode)",
        rows,
        args.out,
    )


if __name__ == "__main__":
    main()
