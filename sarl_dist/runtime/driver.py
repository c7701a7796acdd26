"""The driver: a run's train / evaluate / checkpoint loop, start to end.

Training proceeds in phases that end at evaluation and checkpoint points. Inside a phase
the scheduler (runtime/scheduler.py) keeps every worker busy; a finished episode is sent
to the Learner in one call and logged once the Learner acknowledges it, without the
driver waiting in between, so the driver is off the workers' critical path. At a phase
end the driver waits for the Learner to spend its update budget, so evaluation sees the
policy the data paid for, then runs greedy episodes on the workers and checkpoints
everything a resume needs. The actors (runtime/actors.py) live in one Ray placement
group or, with `runtime.mode: local`, in this process; telemetry is runtime/telemetry.py.
The Learner and the VLMService are restarted by Ray and restore themselves from the run
directory; every handle to them stays valid.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
from ray.util.placement_group import PlacementGroup

from sarl_dist.config import Config, dump_config
from sarl_dist.core.demos import DEMO_EPISODE, load_demos
from sarl_dist.core.prompt_cache import PromptCache
from sarl_dist.envs import env_spec
from sarl_dist.jsonl import read_jsonl
from sarl_dist.runtime import checkpoint as ckpt
from sarl_dist.runtime import compute
from sarl_dist.runtime.actors import PlacementError, RunActors, cpus_needed
from sarl_dist.runtime.attended import Attended, Operator, OperatorQuitError
from sarl_dist.runtime.episode_log import EpisodeLog
from sarl_dist.runtime.rundir import CONFIG_FILE, RunDir, config_digest
from sarl_dist.runtime.scheduler import (
    RunError,
    RunStoppedError,
    Scheduler,
    describe,
    unwrapped,
)
from sarl_dist.runtime.telemetry import Telemetry

log = logging.getLogger(__name__)
CACHE_FILE, DRIVER_FILE = "prompt_cache.json", "driver.json"
RESPONSES_FILE = "vlm_responses.jsonl"  # the VLM's answers, so a resumed run does not pay again


def eval_seed(cfg: Config, j: int) -> int:
    """The j-th evaluation episode's seed: the same at every evaluation point of a run."""
    return int(np.random.SeedSequence([cfg.seed, 2, j]).generate_state(1)[0])


def train_seed(cfg: Config, episode: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, 1, episode]).generate_state(1)[0])


def os_error(exc: OSError) -> str:
    """An OS error as one line naming the path and the cause."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0
    return float(arr.mean()), se


@dataclass
class DriverState:
    """What the driver checkpoints: counts that run on across resumes."""

    episodes: int = 0
    eval_curve: list[list[float]] = field(default_factory=list)
    wall_seconds: float = 0.0
    successes: int = 0
    decisions: int = 0  # in committed training episodes
    faults: dict[str, int] = field(default_factory=dict)  # episodes run again, by kind


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
        self.cfg, self.run, self.on_eval = cfg, run, on_eval
        self.spec = env_spec(cfg)
        self.state = DriverState()
        robot = cfg.env.kind == "robot"
        self.telemetry = Telemetry(run, cfg.train.episodes, show_progress, attended=robot)
        self.actors = RunActors(cfg, run.path.name, placement)
        self.scheduler = Scheduler(
            self.actors,
            cfg.runtime.episode_attempts,
            self.telemetry.metrics,
            run.log_failure,
            self.state.faults,
        )
        self._waiting: list[tuple] = []  # (summary, batch ref) not yet sent to the Learner
        self._in_flight: tuple | None = None  # (ack, summaries) sent, not yet acknowledged
        self._started = time.perf_counter()  # less the wall time of earlier processes
        # This process's training time and the driver loop's CPU in it (its thread: Ray's
        # own run beside it), so one run commits at most 1 / that episodes per second.
        self._train_seconds = self._train_cpu_seconds = 0.0
        self._train_episodes = 0
        store = cfg.vlm.response_store
        self.responses = Path(store) if store else run.path / RESPONSES_FILE

    def start(self, resume_from: Path | None) -> None:
        cache = PromptCache.load(resume_from / CACHE_FILE).state() if resume_from else None
        self.actors.start(
            self.run.checkpoints,
            self.run.episode_log,
            cache,
            read_jsonl(self.responses, torn_ok=True),
            self.run.prompt_cache,
            self.spec.task,
        )
        self.learner, self.vlm = self.actors.learner, self.actors.vlm
        self.telemetry.connect(self.learner, self.vlm, self.responses)
        if self.cfg.env.kind == "robot":
            self.scheduler.attended = Attended(self.cfg, Operator(), self.run.log_label)
        if resume_from is None and self.cfg.train.demos:
            self._load_demos()

    def _load_demos(self) -> None:
        """Offline-to-online: the demonstrations' prompts enter the cache and their
        transitions the replay buffer before the first online episode."""
        demos = load_demos(self.cfg.train.demos)
        texts = sorted({p for d in demos for p in d.prompts})
        ids, _ = compute.get(self.vlm.register.remote(texts))
        prompt_ids = dict(zip(texts, ids, strict=True))
        for k, demo in enumerate(demos):
            batch = demo.batch(prompt_ids, self.cfg.cache.capacity)
            compute.get(self.learner.add_episode.remote(DEMO_EPISODE - k, batch))

    def stop(self) -> None:
        self.actors.stop()
        self.telemetry.close()

    # ---------------------------------------------------------------- episodes
    def _videos(self, greedy: bool, episodes: list[int]) -> dict[int, str]:
        """Video paths: the first eval.videos evaluation episodes; a robot's every episode."""
        robot = self.cfg.env.kind == "robot" and self.cfg.env.robot.videos
        if not greedy:
            chosen = episodes if robot else []
            return {e: str(self.run.path / "videos" / f"train-{e:05d}") for e in chosen}
        prefix = self.run.path / "videos" / f"eval-{self.state.episodes:05d}"
        chosen = episodes if robot else episodes[: self.cfg.eval.videos]
        return {e: f"{prefix}-{-1 - e:02d}" for e in chosen}

    def _train_phase(self, start: int, end: int) -> None:
        jobs = [(i, train_seed(self.cfg, i)) for i in range(start, end)]
        start_time, start_cpu = time.perf_counter(), time.thread_time()
        videos = self._videos(False, [job[0] for job in jobs])
        self.scheduler.run(jobs, False, self._commit, videos)
        self._settle(block=True)
        self._train_seconds += time.perf_counter() - start_time
        self._train_cpu_seconds += time.thread_time() - start_cpu
        self._train_episodes += len(jobs)

    def _commit(self, summary: dict, batch_ref) -> None:
        """Queue a finished training episode for the Learner without waiting for it, then log
        the episodes it has acknowledged since: none is logged that the replay lacks, and
        the driver never waits on the Learner between episodes (but for one robot: its
        person sees each episode logged before the next one starts)."""
        self._waiting.append((summary, batch_ref))
        self._settle(block=self.scheduler.attended is not None)

    def _settle(self, block: bool) -> None:
        """Log the group in flight once acknowledged, then send the episodes that finished
        meanwhile as the next group: one Learner call and one episode-log write per group
        (a group commit), so the more episodes arrive, the fewer calls each costs. With
        `block`, until every episode is logged."""
        while self._in_flight is not None or self._waiting:
            if self._in_flight is not None:
                ack, summaries = self._in_flight
                if not block and not compute.wait([ack], timeout=0)[0]:
                    return
                compute.get(ack)
                self._in_flight = None
                for summary in summaries:
                    self.state.episodes += 1
                    self.state.successes += int(summary["success"])
                    self.state.decisions += summary["decisions"]
                    self.telemetry.committed(summary, self.state.successes)
            if self._waiting:
                summaries = [summary for summary, _ in self._waiting]
                ids = [summary["episode"] for summary in summaries]
                ack = self.learner.add_episodes.remote(ids, *(ref for _, ref in self._waiting))
                self._in_flight, self._waiting = (ack, summaries), []

    def evaluate(self) -> dict:
        start, point, results = time.perf_counter(), self.state.episodes, []
        # Evaluation episode j is numbered -1 - j; it starts from the j-th fixed init state.
        jobs = [(-1 - j, eval_seed(self.cfg, j)) for j in range(self.cfg.eval.episodes)]
        videos = self._videos(True, [job[0] for job in jobs])
        self.scheduler.run(jobs, True, lambda s, _: results.append(s), videos, point)
        for summary in sorted(results, key=lambda r: -r["episode"]):
            self.telemetry.answered_locally(summary)
            index = -1 - summary.pop("episode")
            self.run.log_eval_episode({"eval_point": point, "eval_index": index} | summary)
        mean, se = _mean_se([float(r["success"]) for r in results])
        self.state.eval_curve.append([point, mean])
        record = {
            "episodes_seen": point,
            "success_rate": mean,
            "stderr": se,
            "episodes": len(results),
            "wall_seconds": time.perf_counter() - start,
            "updates": self.telemetry.learner_stats()["updates"],
        }
        self.telemetry.evaluated(record)
        return record

    # ---------------------------------------------------------------- checkpoints
    def checkpoint(self) -> None:
        """Write and seal checkpoints/ep-N; one that cannot be written (a full disk) is
        removed whole and stops the run, so a resume starts from the one before."""
        directory = self.run.checkpoint_dir(self.state.episodes)
        try:
            saved = compute.get(self.learner.save.remote(str(directory)))
            cache = PromptCache.from_state(compute.get(self.vlm.cache_state.remote()))
            cache.save(directory / CACHE_FILE)
            self.telemetry.vlm_stats()  # the VLM's answers so far, stored
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
        if self.scheduler.attended is not None:
            try:
                self.scheduler.attended.stop_arm()
            except Exception as exc:  # report, and still checkpoint
                log.error("could not reach the robot server to stop the arm: %s", exc)
        self.actors.stop_workers()
        if not self.actors.services:
            return  # interrupted while starting: nothing to save yet
        self._settle(block=True)
        self.state.wall_seconds = self.elapsed()
        latest = ckpt.latest(self.run.checkpoints)
        if latest is None or ckpt.episodes_of(latest) != self.state.episodes:
            self.checkpoint()

    def restore(self, directory: Path) -> None:
        self.state = DriverState(**json.loads((directory / DRIVER_FILE).read_text()))
        self.scheduler.faults = self.state.faults
        self.telemetry.progress.resume(self.state.episodes)

    # ---------------------------------------------------------------- the run
    def boundaries(self) -> list[int]:
        total, every, ck = (
            self.cfg.train.episodes,
            self.cfg.eval.every,
            self.cfg.train.checkpoint_every,
        )
        points = {total} | set(range(every, total, every)) | set(range(ck, total, ck))
        return sorted(p for p in points if p > self.state.episodes)

    def elapsed(self) -> float:
        """The run's wall time, earlier processes included."""
        return time.perf_counter() - self._started

    def train(self) -> dict:
        self._started = time.perf_counter() - self.state.wall_seconds
        if self.state.episodes == 0 and not self.state.eval_curve and self.cfg.eval.at_start:
            self._announce(self.evaluate())
        for end in self.boundaries():
            self._train_phase(self.state.episodes, end)
            compute.get(self.learner.wait_idle.remote())
            record = None
            if end % self.cfg.eval.every == 0 or end == self.cfg.train.episodes:
                record = self.evaluate()
            self.state.wall_seconds = self.elapsed()
            self.checkpoint()
            self._announce(record)
        self.state.wall_seconds = self.elapsed()
        return self.summary()

    def _announce(self, record: dict | None) -> None:
        if record is not None and self.on_eval is not None:
            self.on_eval(record)

    def summary(self) -> dict:
        learner = compute.get(self.learner.wait_idle.remote())
        vlm = self.telemetry.vlm_stats()
        curve = self.state.eval_curve
        cpu_ms = (
            1e3 * self._train_cpu_seconds / self._train_episodes if self._train_episodes else None
        )
        return {
            "method": self.cfg.method,
            "nodes": self.actors.nodes,
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
            "decisions": self.state.decisions,
            "decisions_per_second": self.telemetry.decisions / max(1e-9, self._train_seconds),
            "driver_cpu_ms_per_episode": cpu_ms,
            **self.telemetry.timing(self.scheduler.worker_wait),
            "faults": dict(self.state.faults),
            "learner_restarted": learner["restarted"],
            "learner_restored": learner["restored"],
        }


def init_ray(address: str | None, cfg: Config) -> bool:
    """Connect to `address` or start a local cluster (none in local mode); True when this
    call started Ray."""
    if cfg.runtime.mode == "local" or ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
        return True
    robot = cfg.env.kind == "robot"  # its terminal is the person's: Ray's output goes to
    ray.init(  # Ray's session logs, and only Ray's errors are printed
        num_cpus=max(os.cpu_count() or 1, math.ceil(cpus_needed(cfg))),
        include_dashboard=False,
        log_to_driver=not robot,
        logging_level=logging.ERROR if robot else logging.INFO,
    )
    return True


def _resume_point(run: RunDir, resume: bool, extend: bool) -> Path | None:
    """The checkpoint a resume continues from (None: a fresh run), checked against the
    run's config; episodes logged after it are run again, so their log entries go."""
    try:
        resume_from = ckpt.latest(run.checkpoints) if resume else None
        meta = ckpt.verify(resume_from) if resume_from is not None else {}
        if resume_from is not None:
            run.check_resumed_config(resume_from, meta, extend)
        EpisodeLog(run.episode_log).discard_from(meta.get("replay_added", 0))
        return resume_from
    except BaseException:
        run.close()  # the run directory is free for the next attempt
        raise


def _interrupted(driver: Driver, exc: BaseException) -> dict:
    """The summary of a run stopped by Ctrl-C, the operator or a failing actor, after its
    checkpoint."""
    driver.interrupt()
    why = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else str(exc)
    log.warning("%s: checkpointed at %d episodes", why, driver.state.episodes)
    curve = driver.state.eval_curve
    return {
        "interrupted": why,
        "failed": isinstance(exc, RunStoppedError),
        "episodes": driver.state.episodes,
        "last_eval_success": curve[-1][1] if curve else None,  # a mid-run point, if any
        "wall_seconds": driver.state.wall_seconds,
    }


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
    resume_from = _resume_point(run, resume, extend)
    started_ray = init_ray(address, cfg)
    driver = Driver(cfg, run, show_progress, placement, on_eval)
    try:
        driver.start(resume_from)
        if resume_from is not None:
            driver.restore(resume_from)
        run.truncate_logs(None if resume_from is None else driver.state.episodes)
        summary = driver.train()
        run.write_summary(summary)
        return summary
    except (KeyboardInterrupt, OperatorQuitError, RunStoppedError) as exc:
        return _interrupted(driver, exc)
    except PlacementError as exc:
        raise RunError(str(exc)) from None
    except ray.exceptions.RayActorError as exc:
        raise RunError(
            f"a run actor is gone for good (restarted runtime.max_restarts="
            f"{cfg.runtime.max_restarts} times, or could not start): {describe(exc)}"
        ) from None
    except (OSError, ray.exceptions.RayTaskError) as exc:
        if not isinstance(unwrapped(exc), OSError):
            raise
        cause = os_error(unwrapped(exc))
        raise RunError(f"{cause}; continue with: sarl train --resume {run.path}") from None
    finally:
        driver.stop()
        if started_ray:
            ray.shutdown()
        run.close()
