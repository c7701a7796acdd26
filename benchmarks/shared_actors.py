"""How many workers one run's shared parts can feed, measured on the skill chain.

Every worker goes through three serial points: the VLMService (a proposal for each scene
the worker has not seen: it answers the rest from its own copy), the Learner (a weights
poll at most every 20 ms, and the episodes the driver commits, in groups, each group
written to the episode log and fsynced once) and the driver (a commit per episode).
Scaling out stops at the first one to saturate, so each one's capacity is measured here on
this machine and divided by what one worker asks of it, measured in the same run:

1. one worker trains for `--episodes` episodes (configs/skill_chain.yaml, Learner idle
   so the demand is the loop's own): its decisions and episodes per second, the calls it
   sent the VLMService (its requests less the ones it answered itself, summary `vlm`) and
   the Learner's polls it sent (episodes.jsonl `weight_polls`), per second of training,
   and the driver loop's CPU per committed episode (summary `driver_cpu_ms_per_episode`);
2. a fresh VLMService and Learner, built from the same config, are sent the same calls
   for `--seconds` each: `--inflight` of them outstanding at a time (as from that many
   workers), but the commits one group at a time, as the driver sends them, of one
   episode and of `--group` episodes. The scenes are 64 of the skill chain's, the
   episode a real one, passed by reference as the driver passes a worker's. Untimed calls
   first start each actor and show the VLMService every scene once, so the first
   VLMService row times a run whose scenes recur (answers from the service's cache); the
   second sends a frame never seen before with every call, as the skill chain's noisy
   frames are (the proposer runs each time).

Each call is also sent, with the same arguments, to an empty actor of the same kind (asyncio
like the VLMService, threaded like the Learner): vs_empty_actor is how close a shared actor
is to what Ray itself allows one actor here. Workers fed = capacity / one worker's demand:
the worker count past which that part, not the workers, sets a run's pace. It needs only
a core per shared actor, so a 2-core machine can say what a 64-core one would hit first.

    python benchmarks/shared_actors.py [--episodes 60] [--inflight 16] [--group 32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from overhead import bench_config  # a sibling script: benchmarks/ is on sys.path

from sarl_dist.envs import make_env
from sarl_dist.report.bench import emit
from sarl_dist.runtime.driver import run_training
from sarl_dist.runtime.learner import Learner, LearnerSetup
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.runtime.vlm_service import VLMService
from sarl_dist.runtime.worker import EnvWorker


def capacity(method, arguments, inflight: int, seconds: float, warmup: int) -> float:
    """Calls of an actor method answered per second, `arguments(i)` for call i, with
    `inflight` of them always outstanding. The first `warmup` calls are not timed: they pay
    for the actor's start-up and for first sights (a scene the VLMService has not answered)."""
    ray.get([method.remote(*arguments(i)) for i in range(warmup)])
    refs = [method.remote(*arguments(warmup + i)) for i in range(inflight)]
    sent, answered, start = warmup + inflight, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        ready, refs = ray.wait(refs, num_returns=1)
        ray.get(ready)
        answered += 1
        refs.append(method.remote(*arguments(sent)))
        sent += 1
    rate = answered / (time.perf_counter() - start)
    ray.get(refs)  # leave nothing running into the next measurement
    return rate


class Empty:
    """Ray's own cost of a call: the same arguments, nothing done (a threaded actor)."""

    def call(self, *args) -> None:
        return None


class EmptyAsync:
    async def call(self, *args) -> None:
        return None


def row(name: str, cap: float, demand: float, bare: float | None = None) -> dict:
    return {
        "serial_point": name,
        "capacity_per_s": round(cap, 1),
        "empty_actor_per_s": None if bare is None else round(bare, 1),
        "vs_empty_actor": None if bare is None else round(cap / bare, 3),
        "one_worker_demand_per_s": round(demand, 1),
        "workers_fed": round(cap / demand, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--group", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    cfg = bench_config(1, args.episodes, learning=False)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(Path(tmp) / "one", cfg)
        one = run_training(cfg, run, show_progress=False)
        per_episode = one["decisions"] / one["episodes"]
        decisions = one["decisions_per_second"]
        seconds = one["decisions"] / decisions  # of training
        proposals = (one["vlm"]["requests"] - one["vlm"]["worker_hits"]) / seconds
        polls = sum(e["weight_polls"] for e in run.read_jsonl("episodes.jsonl")) / seconds

        env = make_env(cfg)
        vlm = ray.remote(VLMService).remote(cfg, env.spec.task)
        learner = ray.remote(Learner).options(max_concurrency=8)
        learner = learner.remote(
            LearnerSetup.of(cfg), cfg.cache.capacity, None, str(Path(tmp) / "log")
        )
        scenes = []
        for seed in range(64):
            env.reset(seed)
            scenes.append(env.observe().scene)  # sent by value, as a worker sends it
        texts = ray.get(vlm.prompt_texts.remote())
        worker = ray.remote(EnvWorker).remote(cfg, 0, learner, vlm, texts)
        episode = worker.run_episode.remote(0, 0, False)[1]  # passed by ref, as the driver does
        held = ray.get(learner.poll.remote(None))[3][0].hex()
        episodes = decisions / per_episode
        empty = ray.remote(Empty).options(max_concurrency=8).remote()  # like the Learner
        empty_async = ray.remote(EmptyAsync).remote()  # like the VLMService

        ids = itertools.count()  # every episode committed is new to the Learner

        def group(size: int):  # the arguments of a group of `size` episodes, as the driver's
            return lambda i: ([next(ids) for _ in range(size)], *[episode] * size)

        def new_scene(i: int):  # a frame no call showed before (the skill chain's have noise)
            scene = scenes[i % len(scenes)].copy()
            scene.flat[:8] = np.frombuffer(np.int64(i).tobytes(), np.uint8)
            return (scene,)

        calls = {  # name: (method, the empty actor's, arguments of call i, in flight, one
            # worker's rate of calls, episodes per call)
            "VLMService.candidates (scenes seen before)": (
                vlm.candidates,
                empty_async.call,
                lambda i: (scenes[i % len(scenes)],),
                args.inflight,
                proposals,
                1,
            ),
            "VLMService.candidates (every scene new)": (
                vlm.candidates,
                empty_async.call,
                new_scene,
                args.inflight,
                proposals,
                1,
            ),
            "Learner.poll": (learner.poll, empty.call, lambda i: (held,), args.inflight, polls, 1),
            "Learner.add_episodes (groups of 1)": (
                learner.add_episodes,
                empty.call,
                group(1),
                1,
                episodes,
                1,
            ),
            f"Learner.add_episodes (groups of {args.group})": (
                learner.add_episodes,
                empty.call,
                group(args.group),
                1,
                episodes,
                args.group,
            ),
        }
        rows = []
        for name, (method, floor, arguments, inflight, demand, size) in calls.items():
            warmup = max(inflight, len(scenes))  # every scene seen once
            cap = capacity(method, arguments, inflight, args.seconds, warmup)
            bare = capacity(floor, arguments, inflight, args.seconds, warmup)
            rows.append(row(name, cap * size, demand, bare * size))
        rows.append(row("driver commit", 1e3 / one["driver_cpu_ms_per_episode"], episodes))
    ray.shutdown()
    emit(
        f"shared actors: capacity against one worker's demand ({decisions:.1f} decisions/s, "
        f"{per_episode:.1f} decisions per episode, {proposals:.1f} VLMService calls/s, "
        f"{polls:.1f} Learner polls/s)",
        rows,
        args.out,
    )


if __name__ == "__main__":
    main()
