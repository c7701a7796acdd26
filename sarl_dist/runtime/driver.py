"""The driver: starts a run's actors in one placement group and drives it to the end.

Training proceeds in phases that end at evaluation and checkpoint points. Inside a phase
every worker always has an episode running and, while enough jobs wait, its next one
queued behind it; a finished episode is sent to the Learner in one call and logged once
the Learner acknowledges it, without the driver waiting in between, so the driver is off
the workers' critical path. At a phase end the driver waits for the Learner to spend its
update budget, so evaluation sees the policy the data paid for, then runs greedy
episodes on the workers and checkpoints everything a resume needs.

Faults (docs/reliability.md): an episode whose worker dies or raises is run again from
its start on a fresh worker, at most `runtime.episode_attempts` times; one cut short by
a dropped VLA connection is run again on the same, reconnected worker (moved to another
policy server replica when its own stays away; see docs/scaling.md). Its transitions
never left the worker, so nothing of it reaches the replay buffer and the episode count
stays exact. The Learner and the VLMService are restarted by Ray and restore themselves
from the run directory; every handle to them stays valid.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from sarl_dist.config import Config, dump_config
from sarl_dist.core.demos import DEMO_EPISODE, load_demos
from sarl_dist.core.prompt_cache import PromptCache
from sarl_dist.envs import env_spec
from sarl_dist.robot.operator import Attended, Operator, OperatorQuitError
from sarl_dist.runtime import checkpoint as ckpt
from sarl_dist.runtime.episode_log import EpisodeLog
from sarl_dist.runtime.learner import Learner
from sarl_dist.runtime.metrics import Rate, RunMetrics
from sarl_dist.runtime.progress import Progress
from sarl_dist.runtime.rundir import CONFIG_FILE, RunDir, config_digest
from sarl_dist.runtime.vla_server import VLAServer
from sarl_dist.runtime.vlm_service import VLMService, append_responses, load_responses
from sarl_dist.runtime.worker import EnvWorker
from sarl_dist.vla import configured_servers, servers_for
from sarl_dist.vla.client import VLAConnectionLostError
from sarl_dist.vlm.base import VLMUnusableError

log = logging.getLogger(__name__)
PLACEMENT_TIMEOUT_S = 120.0
CACHE_FILE, DRIVER_FILE = "prompt_cache.json", "driver.json"
# Seconds between the live view's fetches of Learner and VLM stats while committing episodes:
# fetched for every episode, with many fast workers they made the driver's commit the ceiling.
LIVE_STATS_EVERY_S = 1.0
RESPONSES_FILE = "vlm_responses.jsonl"  # the VLM's answers, so a resumed run does not pay again


class RunError(RuntimeError):
    pass


class RunStoppedError(Exception):
    """A fault that ends the run cleanly (checkpointed, resumable) rather than episode by
    episode: the VLM refusing every query."""


def eval_seed(cfg: Config, j: int) -> int:
    """The j-th evaluation episode's seed: the same at every evaluation point of a run."""
    return int(np.random.SeedSequence([cfg.seed, 2, j]).generate_state(1)[0])


def train_seed(cfg: Config, episode: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, 1, episode]).generate_state(1)[0])


@dataclass
class DriverState:
    episodes: int = 0
    eval_curve: list[list[float]] = field(default_factory=list)
    wall_seconds: float = 0.0
    successes: int = 0


def placement_bundles(cfg: Config) -> list[dict[str, float]]:
    """A run's placement group: the Learner, the VLMService, each worker, then each of the
    run's own policy-server replicas, in that order (the actors' bundle indices)."""
    rt, vla = cfg.runtime, cfg.vla
    worker = {"CPU": rt.worker_cpus} | ({"GPU": rt.worker_gpus} if rt.worker_gpus else {})
    server = {"CPU": vla.server_cpus} | ({"GPU": vla.server_gpus} if vla.server_gpus else {})
    replicas = vla.replicas if vla.kind == "skill" else 0
    return (
        [{"CPU": rt.learner_cpus}, {"CPU": rt.vlm_cpus}]
        + [worker] * rt.num_workers
        + [server | vla.server_resources] * replicas
    )


def cpus_needed(cfg: Config) -> float:
    """The CPUs a run's placement group asks for."""
    return sum(b["CPU"] for b in placement_bundles(cfg))


def unwrapped(exc: BaseException) -> BaseException:
    """The exception a remote call raised, without Ray's wrapping."""
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc


def os_error(exc: OSError) -> str:
    """An OS error as one line naming the path and the cause."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def describe(exc: BaseException) -> str:
    """One line for a failure: the actor's own exception, not Ray's wrapping. An actor whose
    constructor raised is reported by that exception (the last line of Ray's message: the
    first only says the actor died in its creation task)."""
    exc = unwrapped(exc)
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if isinstance(exc, ray.exceptions.RayActorError) and exc.actor_init_failed and lines:
        return f"{type(exc).__name__} in its constructor: {lines[-1].strip()[:300]}"
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def _mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0
    return float(arr.mean()), se


class Driver:
    def __init__(
        self,
        cfg: Config,
        run: RunDir,
        show_progress: bool = True,
        placement: PlacementGroup | None = None,
        on_eval: Callable[[dict], None] | None = None,
    ) -> None:
        """`placement`: a placement group already holding this run's bundles (a Ray Tune
        trial's), used instead of one of its own; `on_eval(record)` after each evaluation
        point, once what it saw is checkpointed."""
        self.cfg, self.run = cfg, run
        self._given_pg, self.on_eval = placement, on_eval
        self.spec = env_spec(cfg)
        self.state = DriverState()
        self.progress = Progress(
            cfg.train.episodes, enabled=show_progress, plain=cfg.env.kind == "robot"
        )
        self.attended: Attended | None = None  # one robot: episodes go with the person
        self._pg = None
        self.nodes: list[str] = []
        self._services: list = []
        self.workers: list = []
        self.vla_servers: list = []  # the run's own VLAServer actors (vla.kind=skill)
        self._vla_addresses: list[tuple[str, int]] = []
        self.faults: Counter[str] = Counter()
        self._overhead: list[float] = []
        self._live: tuple[float, dict, dict] | None = None  # (when, learner stats, VLM stats)
        self._staleness: list[int] = []
        self._worker_wait: list[float] = []  # seconds between a worker's training episodes
        self._unacknowledged: deque[tuple[ray.ObjectRef, dict]] = deque()  # sent to the Learner
        self._decisions = 0
        self._train_seconds = 0.0
        # The driver loop's CPU per training episode (its thread: Ray's own run beside it),
        # so one run commits at most 1 / that episodes per second (benchmarks/shared_actors.py).
        self._train_cpu_seconds, self._train_episodes = 0.0, 0
        self.metrics = RunMetrics(run.path.name)
        self._decision_rate, self._update_rate = Rate(), Rate()
        store = cfg.vlm.response_store
        self.responses = Path(store) if store else run.path / RESPONSES_FILE

    # ---------------------------------------------------------------- start-up
    def _options(
        self, bundle: int, cpus: float, gpus: float = 0.0, resources: dict | None = None
    ) -> dict:
        return {
            "num_cpus": cpus,
            "num_gpus": gpus,
            "resources": resources or {},
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self._pg, placement_group_bundle_index=bundle
            ),
        }

    def start(self, resume_from: Path | None) -> None:
        rt, vla = self.cfg.runtime, self.cfg.vla
        replicas = vla.replicas if vla.kind == "skill" else 0
        bundles = placement_bundles(self.cfg)
        if self._given_pg is not None:
            self._pg = self._given_pg
            given = [{k: v for k, v in b.items() if v} for b in self._pg.bundle_specs]
            if given != [{k: v for k, v in b.items() if v} for b in bundles]:
                raise RunError(f"the placement group given holds {given}, this run needs {bundles}")
        else:
            self._pg = placement_group(
                bundles, strategy=rt.placement, name=f"sarl-{self.run.path.name}"
            )
        ready, _ = ray.wait([self._pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            need: Counter[str] = Counter()
            for bundle in bundles:
                need.update(bundle)
            free = ray.available_resources()
            raise RunError(
                f"the cluster could not place this run's actors within {PLACEMENT_TIMEOUT_S:.0f}s "
                f"(needs {', '.join(f'{v:g} {k}' for k, v in need.items())} in {len(bundles)} "
                f"bundles, strategy {rt.placement}); available: "
                + ", ".join(f"{free.get(k, 0):g} {k}" for k in need)
            )
        placed = placement_group_table(self._pg)["bundles_to_node_id"].values()
        self.nodes = sorted(set(placed))  # where this run's actors live, for the summary
        cache_state = None
        if resume_from is not None:
            cache_state = PromptCache.load(resume_from / CACHE_FILE).state()
        durable = {"max_restarts": rt.max_restarts, "max_task_retries": rt.max_restarts}
        self.learner = (
            ray.remote(Learner).options(
                max_concurrency=8, **durable, **self._options(0, rt.learner_cpus)
            )
        ).remote(
            self.cfg,
            self.cfg.cache.capacity,
            str(self.run.checkpoints),
            str(self.run.episode_log),
            self.run.path.name,
        )
        self.vlm = (
            ray.remote(VLMService)
            .options(**durable, **self._options(1, rt.vlm_cpus))
            .remote(
                self.cfg,
                self.spec.task,
                cache_state,
                load_responses(self.responses),
                str(self.run.prompt_cache),
                self.run.path.name,
            )
        )
        self._services = [self.learner, self.vlm]
        first = 2 + rt.num_workers
        self.vla_servers = [
            ray.remote(VLAServer)
            .options(
                **self._options(
                    first + i, vla.server_cpus, vla.server_gpus, dict(vla.server_resources)
                )
            )
            .remote(self.cfg)
            for i in range(replicas)
        ]
        self._services += self.vla_servers
        if vla.kind == "websocket":
            self._vla_addresses = configured_servers(self.cfg)
        else:
            self._vla_addresses = ray.get([s.address.remote() for s in self.vla_servers])
        self.workers = [self._new_worker(i) for i in range(rt.num_workers)]
        ray.get([w.ready.remote() for w in self.workers])
        if self.cfg.env.kind == "robot":
            self.attended = Attended(self.cfg, Operator(), self.run.log_label)
        if resume_from is None and self.cfg.train.demos:
            self._load_demos()

    def _load_demos(self) -> None:
        """Offline-to-online: the demonstrations' prompts enter the cache and their
        transitions the replay buffer before the first online episode."""
        demos = load_demos(self.cfg.train.demos)
        texts = sorted({p for d in demos for p in d.prompts})
        ids, _ = ray.get(self.vlm.register.remote(texts))
        prompt_ids = dict(zip(texts, ids, strict=True))
        for k, demo in enumerate(demos):
            batch = demo.batch(prompt_ids, self.cfg.cache.capacity)
            ray.get(self.learner.add_episode.remote(DEMO_EPISODE - k, batch))

    def _new_worker(self, slot: int):
        rt = self.cfg.runtime
        texts = ray.get(self.vlm.prompt_texts.remote())
        return (
            ray.remote(EnvWorker)
            .options(**self._options(2 + slot, rt.worker_cpus, rt.worker_gpus))
            .remote(
                self.cfg,
                slot,
                self.learner,
                self.vlm,
                texts,
                servers_for(slot, self._vla_addresses),
            )
        )

    def stop(self) -> None:
        for actor in self._services + self.workers:
            ray.kill(actor)
        if self._pg is not None and self._pg is not self._given_pg:
            remove_placement_group(self._pg)
        self._services, self.workers, self.vla_servers, self._pg = [], [], [], None
        self.progress.close()

    # ---------------------------------------------------------------- episodes
    def _run_episodes(
        self, jobs: list[tuple[int, int]], greedy: bool, on_done, videos: dict | None = None
    ) -> None:
        """Run (episode, seed) jobs on the workers; on_done(summary, batch_ref) for each.

        While at least as many jobs wait as there are workers, every worker has its next
        episode queued behind the one it runs, and starts it without a round trip to the
        driver; the last jobs go to whichever worker is free first, so a phase does not end
        waiting on one worker's queue. A job that fails is queued again and run from its
        start; only whole episodes reach on_done, each once."""
        if self.attended is not None:
            return self._run_attended(jobs, greedy, on_done, videos)
        pending: dict = {}  # summary ref -> (slot, job, batch ref), in the order sent
        queue = list(reversed(jobs))
        setbacks: Counter[tuple] = Counter()
        returned: dict[int, float] = {}  # slot -> when its worker returned its last episode

        def fill() -> None:
            load = Counter(slot for slot, _, _ in pending.values())  # episodes not yet back
            while queue:
                slot = min(range(len(self.workers)), key=load.__getitem__)
                if load[slot] >= (2 if len(queue) >= len(self.workers) else 1):
                    return
                job = queue.pop()
                video = (videos or {}).get(job[0])
                summary_ref, batch_ref = self.workers[slot].run_episode.remote(*job, greedy, video)
                pending[summary_ref] = (slot, job, batch_ref)
                load[slot] += 1

        while queue or pending:
            fill()
            done, _ = ray.wait(list(pending), num_returns=1)
            slot = pending[done[0]][0]
            try:
                summary = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                # A worker runs its episodes in order: when it dies, the oldest one sent is
                # the one it was running. A replaced worker's queue goes with it.
                mine = [ref for ref, sent in pending.items() if sent[0] == slot]
                died = isinstance(exc, ray.exceptions.RayActorError)
                job = pending[mine[0] if died else done[0]][1]
                replaced = self._interrupted(slot, job, exc, setbacks)
                for ref in reversed(mine if replaced else done):  # the oldest goes out first
                    queue.append(pending.pop(ref)[1])
                if replaced:
                    returned.pop(slot, None)
                continue
            _, _, batch_ref = pending.pop(done[0])
            if slot in returned and not greedy:
                self._worker_wait.append(summary["started_at"] - returned[slot])
            returned[slot] = summary["ended_at"]
            fill()  # its worker has its next episode before on_done sees this one
            on_done(summary, batch_ref)

    def _run_attended(self, jobs, greedy: bool, on_done, videos: dict | None) -> None:
        """One robot: episodes one at a time, each reset, marked and labelled by the person."""
        queue = list(reversed(jobs))
        setbacks: Counter[tuple] = Counter()
        while queue:
            job = queue[-1]
            video = (videos or {}).get(job[0])

            def launch(job=job, video=video):
                return self.workers[0].run_episode.remote(*job, greedy, video)

            try:
                summary, batch = self.attended.run(job, greedy, launch)
            except ray.exceptions.RayError as exc:
                self._interrupted(0, job, exc, setbacks)
                continue
            queue.pop()
            on_done(summary, batch)

    def _videos(self, kind: str, episodes: list[int]) -> dict[int, str]:
        """Video paths: the first eval.videos evaluation episodes; a robot's every episode."""
        robot = self.cfg.env.kind == "robot" and self.cfg.env.robot.videos
        if kind == "train":
            chosen = episodes if robot else []
            return {e: str(self.run.path / "videos" / f"train-{e:05d}") for e in chosen}
        prefix = self.run.path / "videos" / f"eval-{self.state.episodes:05d}"
        chosen = episodes if robot else episodes[: self.cfg.eval.videos]
        return {e: f"{prefix}-{-1 - e:02d}" for e in chosen}

    def _interrupted(self, slot: int, job: tuple[int, int], exc: Exception, setbacks) -> bool:
        """Record an episode that did not finish; replace its worker (returns True) unless
        only the VLA connection dropped (the client has reconnected); stop once it keeps
        failing."""
        episode, seed = job
        if isinstance(unwrapped(exc), VLMUnusableError):
            raise RunStoppedError(str(unwrapped(exc))) from None
        if isinstance(exc, VLAConnectionLostError):
            kind = "vla_disconnect"
        elif isinstance(exc, ray.exceptions.RayActorError):
            kind = "worker_died"
        else:
            kind = "episode_error"
        lost_link = kind == "vla_disconnect"
        setbacks[job, lost_link] += 1
        self.faults[kind] += 1
        self.metrics.faults.inc(tags={"kind": kind})
        error = describe(exc)
        self.run.log_failure(
            {"episode": episode, "seed": seed, "worker": slot, "kind": kind, "error": error}
        )
        if setbacks[job, lost_link] >= self.cfg.runtime.episode_attempts:
            what = "lost its VLA connection" if lost_link else "failed"
            raise RunError(
                f"episode {episode} (seed {seed}) {what} {setbacks[job, lost_link]} times "
                f"(runtime.episode_attempts); last error: {error}"
            )
        if lost_link:
            return False
        ray.kill(self.workers[slot])
        self.workers[slot] = self._new_worker(slot)
        return True

    def _train_phase(self, start: int, end: int) -> None:
        jobs = [(i, train_seed(self.cfg, i)) for i in range(start, end)]
        start_time, start_cpu = time.perf_counter(), time.thread_time()
        videos = self._videos("train", [job[0] for job in jobs])
        self._run_episodes(jobs, greedy=False, on_done=self._commit, videos=videos)
        self._settle(block=True)
        self._train_seconds += time.perf_counter() - start_time
        self._train_cpu_seconds += time.thread_time() - start_cpu
        self._train_episodes += len(jobs)

    def _commit(self, summary: dict, batch_ref) -> None:
        """Send a finished training episode to the Learner without waiting for it, then log
        the episodes it has acknowledged since: none is logged that the replay lacks, and
        the driver never waits on the Learner between episodes."""
        ack = self.learner.add_episode.remote(summary["episode"], batch_ref)
        self._unacknowledged.append((ack, summary))
        self._settle(block=False)

    def _settle(self, block: bool) -> None:
        """Log acknowledged episodes in the order they were sent; with `block`, all of them."""
        while self._unacknowledged:
            ack, summary = self._unacknowledged[0]
            if not block and not ray.wait([ack], timeout=0)[0]:
                return
            ray.get(ack)
            self._unacknowledged.popleft()
            self._log_committed(summary)

    def _log_committed(self, summary: dict) -> None:
        self.state.episodes += 1
        self.state.successes += int(summary["success"])
        self.run.log_episode(summary)
        self._overhead += summary["overhead_ms"]
        self._staleness += summary["staleness_updates"]
        self._decisions += summary["decisions"]
        fresh = self._refresh_live_stats()
        _, learner, vlm = self._live
        scalars = {
            **self._record(summary, learner),
            "worker/staleness_updates": max(summary["staleness_updates"]),
            "worker/overhead_ms": float(np.median(summary["overhead_ms"])),
        }
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

    def _record(self, summary: dict, learner: dict) -> dict:
        """Send a committed episode to the live metrics; the rates, for TensorBoard."""
        m = self.metrics
        m.episodes.inc()
        if summary["success"]:
            m.successes.inc()
        for behind in summary["staleness_updates"]:
            m.staleness.observe(behind)
        rates = {
            "train/decisions_per_second": self._decision_rate(self._decisions),
            "learner/updates_per_second": self._update_rate(learner["updates"]),
        }
        m.decisions_per_second.set(rates["train/decisions_per_second"])
        m.updates_per_second.set(rates["learner/updates_per_second"])
        return {**rates, "train/successes": self.state.successes}

    def _refresh_live_stats(self) -> bool:
        """Fetch the Learner's and the VLM's stats for the live view unless the last fetch
        is under LIVE_STATS_EVERY_S old (checkpoints and the summary fetch their own);
        True when it fetched."""
        now = time.monotonic()
        if self._live is not None and now - self._live[0] < LIVE_STATS_EVERY_S:
            return False
        self._live = (now, self._learner_stats(), self._save_responses())
        return True

    def _learner_stats(self) -> dict:
        return ray.get(self.learner.stats.remote())

    def _save_responses(self) -> dict:
        """Append the VLM's new answers to the store; the VLM meters as they stand."""
        fresh, stats = ray.get([self.vlm.drain_responses.remote(), self.vlm.stats.remote()])
        append_responses(self.responses, fresh)
        return stats

    def evaluate(self) -> float:
        start = time.perf_counter()
        results: list[dict] = []
        # Evaluation episode j is numbered -1 - j; it starts from the j-th fixed init state.
        jobs = [(-1 - j, eval_seed(self.cfg, j)) for j in range(self.cfg.eval.episodes)]
        videos = self._videos("eval", [job[0] for job in jobs])
        self._run_episodes(jobs, True, lambda s, _: results.append(s), videos)
        mean, se = _mean_se([float(r["success"]) for r in results])
        record = {
            "episodes_seen": self.state.episodes,
            "success_rate": mean,
            "stderr": se,
            "episodes": len(results),
            "wall_seconds": time.perf_counter() - start,
            "updates": self._learner_stats()["updates"],
        }
        self.state.eval_curve.append([self.state.episodes, mean])
        self.metrics.eval_success.set(mean)
        self.run.log_eval(record)
        self.progress.evaluation(record)
        return record

    # ---------------------------------------------------------------- checkpoints
    def checkpoint(self) -> None:
        """Write and seal checkpoints/ep-N; one that cannot be written (a full disk) is
        removed whole and stops the run, so a resume starts from the one before."""
        directory = self.run.checkpoint_dir(self.state.episodes)
        try:
            saved = ray.get(self.learner.save.remote(str(directory)))
            cache = PromptCache.from_state(ray.get(self.vlm.cache_state.remote()))
            cache.save(directory / CACHE_FILE)
            self._save_responses()
            ckpt.write_atomic(directory / DRIVER_FILE, json.dumps(vars(self.state)).encode())
            ckpt.write_atomic(directory / CONFIG_FILE, dump_config(self.cfg).encode())
            meta = {"episodes": self.state.episodes, "config_sha256": config_digest(self.cfg)}
            ckpt.seal(directory, meta | saved)
        except Exception as exc:
            shutil.rmtree(directory, ignore_errors=True)
            if isinstance(exc, OSError) or isinstance(unwrapped(exc), OSError):
                raise RunError(f"could not write checkpoint {directory}: {describe(exc)}") from None
            raise
        EpisodeLog(self.run.episode_log).trim_before(saved["replay_added"])
        ckpt.prune(directory.parent, keep=2)

    def interrupt(self) -> None:
        """Ctrl-C: the arm stops first, then no worker runs on, then what was committed is
        checkpointed, so `--resume` continues from here."""
        if self.attended is not None:
            try:
                self.attended.stop_arm()
            except Exception as exc:  # report, and still checkpoint
                log.error("could not reach the robot server to stop the arm: %s", exc)
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
        if not self._services:
            return  # interrupted while starting: nothing to save yet
        self._settle(block=True)
        latest = ckpt.latest(self.run.checkpoints)
        if latest is None or ckpt.episodes_of(latest) != self.state.episodes:
            self.checkpoint()

    def restore(self, directory: Path) -> None:
        self.state = DriverState(**json.loads((directory / DRIVER_FILE).read_text()))
        self.progress.resume(self.state.episodes)

    # ---------------------------------------------------------------- the run
    def boundaries(self) -> list[int]:
        total, every, ck = (
            self.cfg.train.episodes,
            self.cfg.eval.every,
            self.cfg.train.checkpoint_every,
        )
        points = {total} | set(range(every, total, every)) | set(range(ck, total, ck))
        return sorted(p for p in points if p > self.state.episodes)

    def train(self) -> dict:
        started = time.perf_counter() - self.state.wall_seconds
        if self.state.episodes == 0 and not self.state.eval_curve and self.cfg.eval.at_start:
            self._announce(self.evaluate())
        for end in self.boundaries():
            self._train_phase(self.state.episodes, end)
            ray.get(self.learner.wait_idle.remote())
            record = None
            if end % self.cfg.eval.every == 0 or end == self.cfg.train.episodes:
                record = self.evaluate()
            self.state.wall_seconds = time.perf_counter() - started
            self.checkpoint()
            self._announce(record)
        self.state.wall_seconds = time.perf_counter() - started
        return self.summary()

    def _announce(self, record: dict | None) -> None:
        if record is not None and self.on_eval is not None:
            self.on_eval(record)

    def summary(self) -> dict:
        learner = ray.get(self.learner.wait_idle.remote())
        vlm = self._save_responses()
        overhead = np.asarray(self._overhead or [float("nan")])
        staleness = np.asarray(self._staleness or [0])
        wait_ms = 1e3 * np.asarray(self._worker_wait)
        curve = self.state.eval_curve
        return {
            "method": self.cfg.method,
            "nodes": self.nodes,
            "seed": self.cfg.seed,
            "env": self.cfg.env.kind,
            "task": self.spec.task,
            "episodes": self.state.episodes,
            "train_success_rate": self.state.successes / max(1, self.state.episodes),
            "wall_seconds": self.state.wall_seconds,
            "final_eval_success": curve[-1][1] if curve else None,
            "eval_curve": curve,
            "updates": learner["updates"],
            "replay_size": learner["replay_size"],
            "policy_version": learner["version"],
            "vlm_calls": vlm["calls"],
            "vlm": vlm,
            "decisions": self._decisions,
            "decisions_per_second": self._decisions / max(1e-9, self._train_seconds),
            "driver_cpu_ms_per_episode": 1e3 * self._train_cpu_seconds / self._train_episodes
            if self._train_episodes
            else None,
            "overhead_ms_p50": float(np.nanpercentile(overhead, 50)),
            "overhead_ms_p95": float(np.nanpercentile(overhead, 95)),
            "staleness_updates_p50": float(np.percentile(staleness, 50)),
            "staleness_updates_p95": float(np.percentile(staleness, 95)),
            "staleness_updates_max": int(staleness.max()),
            # None where no worker ran two training episodes in a row (one robot, attended)
            "worker_wait_ms_p50": float(np.percentile(wait_ms, 50)) if wait_ms.size else None,
            "worker_wait_ms_p95": float(np.percentile(wait_ms, 95)) if wait_ms.size else None,
            "faults": dict(self.faults),
            "learner_restarted": learner["restarted"],
            "learner_restored": learner["restored"],
        }


def init_ray(address: str | None, cfg: Config) -> bool:
    """Connect to `address` or start a local cluster; True when this call started Ray."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
        return True
    ray.init(
        num_cpus=max(os.cpu_count() or 1, math.ceil(cpus_needed(cfg))),
        include_dashboard=False,
        log_to_driver=True,
    )
    return True


def run_training(
    cfg: Config,
    run: RunDir,
    address: str | None = None,
    resume: bool = False,
    show_progress: bool = True,
    extend: bool = False,
    placement: PlacementGroup | None = None,
    on_eval: Callable[[dict], None] | None = None,
) -> dict:
    """Run (or with `resume`, continue) the run in `run`; `extend` lets a resume raise
    train.episodes above what the checkpoint recorded; `placement` and `on_eval` as for
    Driver (a sweep's trial). A file system error (a full disk, a read-only directory) ends
    it as a RunError naming the path; the run resumes from its last sealed checkpoint."""
    try:
        resume_from = ckpt.latest(run.checkpoints) if resume else None
        meta = ckpt.verify(resume_from) if resume_from is not None else {}
        if resume_from is not None:
            run.check_resumed_config(resume_from, meta, extend)
        # Episodes committed after the checkpoint are run again, so their log entries go.
        EpisodeLog(run.episode_log).discard_from(meta.get("replay_added", 0))
    except BaseException:
        run.close()  # the run directory is free for the next attempt
        raise
    started_ray = init_ray(address, cfg)
    driver = Driver(cfg, run, show_progress, placement, on_eval)
    try:
        driver.start(resume_from)
        if resume_from is not None:
            driver.restore(resume_from)
            run.truncate_logs(driver.state.episodes)
        else:
            run.truncate_logs(0)
        summary = driver.train()
        run.write_summary(summary)
        return summary
    except (KeyboardInterrupt, OperatorQuitError, RunStoppedError) as exc:
        driver.interrupt()
        why = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else str(exc)
        log.warning("%s: checkpointed at %d episodes", why, driver.state.episodes)
        curve = driver.state.eval_curve
        return {
            "interrupted": why,
            "failed": isinstance(exc, RunStoppedError),
            "episodes": driver.state.episodes,
            "final_eval_success": curve[-1][1] if curve else None,
            "wall_seconds": driver.state.wall_seconds,
        }
    except ray.exceptions.RayActorError as exc:
        raise RunError(
            f"a run actor is gone for good (restarted runtime.max_restarts="
            f"{cfg.runtime.max_restarts} times, or could not start): {describe(exc)}"
        ) from None
    except (OSError, ray.exceptions.RayTaskError) as exc:
        if not isinstance(unwrapped(exc), OSError):
            raise
        raise RunError(
            f"{os_error(unwrapped(exc))}; continue with: sarl train --resume {run.path}"
        ) from None
    finally:
        driver.stop()
        if started_ray:
            ray.shutdown()
        run.close()
