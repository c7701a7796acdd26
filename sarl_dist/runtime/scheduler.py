"""Episodes onto workers, and the fault policy (docs/reliability.md).

Inside a phase every worker always has an episode running and, while enough jobs wait,
its next one queued behind it, so it starts the next without a round trip to the driver.
An episode whose worker dies or raises is run again from its start on a fresh worker, at
most `runtime.episode_attempts` times; one cut short by a dropped VLA connection is run
again on the same, reconnected worker; one cut by a robot-server restart on a new worker.
Its transitions never left the worker, so nothing of it reaches the replay buffer and
the episode count stays exact. One robot runs one episode at a time, with its person.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable

import ray

from sarl_dist.robot.client import RobotConnectionLostError
from sarl_dist.runtime import compute
from sarl_dist.runtime.actors import RunActors
from sarl_dist.runtime.attended import Attended
from sarl_dist.runtime.metrics import RunMetrics
from sarl_dist.vla.client import VLAConnectionLostError
from sarl_dist.vlm.base import VLMUnusableError

Job = tuple[int, int]  # (episode index, seed); evaluation episode j is -1 - j


class RunError(RuntimeError):
    pass


class RunStoppedError(Exception):
    """A fault that ends the run cleanly (checkpointed, resumable) rather than episode by
    episode: the VLM refusing every query."""


def unwrapped(exc: BaseException) -> BaseException:
    """The exception a remote call raised, without Ray's wrapping."""
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc


def describe(exc: BaseException) -> str:
    """One line for a failure: the actor's own exception, not Ray's wrapping. An actor whose
    constructor raised is reported by that exception (the last line of Ray's message: the
    first only says the actor died in its creation task)."""
    exc = unwrapped(exc)
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if isinstance(exc, ray.exceptions.RayActorError) and exc.actor_init_failed and lines:
        return f"{type(exc).__name__} in its constructor: {lines[-1].strip()[:300]}"
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def consume(refs: list) -> None:
    """Fetch the results of a failed task, so Ray does not report them as unhandled."""
    for ref in refs:
        with contextlib.suppress(ray.exceptions.RayError):
            compute.get(ref)


class Scheduler:
    def __init__(
        self,
        actors: RunActors,
        attempts: int,
        metrics: RunMetrics,
        log_failure: Callable[[dict], None],
        faults: dict[str, int],
    ) -> None:
        self.actors, self.attempts, self.metrics = actors, attempts, metrics
        self.log_failure, self.faults = log_failure, faults
        self.attended: Attended | None = None  # one robot: episodes go with the person
        self.worker_wait: list[float] = []  # seconds between a worker's training episodes

    def run(
        self,
        jobs: list[Job],
        greedy: bool,
        on_done,
        videos: dict[int, str],
        point: int | None = None,
    ) -> None:
        """Run the jobs; on_done(summary, batch_ref) for each finished one, once. `point`:
        the evaluation point greedy jobs belong to."""
        if self.attended is not None:
            return self._attended(jobs, greedy, on_done, videos, point)
        workers = self.actors.workers
        pending: dict = {}  # summary ref -> (slot, job, batch ref), in the order sent
        queue, setbacks = list(reversed(jobs)), Counter()
        returned: dict[int, float] = {}  # slot -> when its worker returned its last episode

        def fill() -> None:
            load = Counter(slot for slot, _, _ in pending.values())  # episodes not yet back
            while queue:
                slot = min(range(len(workers)), key=load.__getitem__)
                if load[slot] >= (2 if len(queue) >= len(workers) else 1):
                    return
                job = queue.pop()
                summary_ref, batch_ref = workers[slot].run_episode.remote(
                    *job, greedy, videos.get(job[0])
                )
                pending[summary_ref] = (slot, job, batch_ref)
                load[slot] += 1

        while queue or pending:
            fill()
            done, _ = compute.wait(list(pending), num_returns=1)
            slot = pending[done[0]][0]
            try:
                summary = compute.get(done[0])
            except ray.exceptions.RayError as exc:
                # A worker runs its episodes in order: when it dies, the oldest one sent is
                # the one it was running. A replaced worker's queue goes with it.
                mine = [ref for ref, sent in pending.items() if sent[0] == slot]
                died = isinstance(exc, ray.exceptions.RayActorError)
                replaced = self._failed(
                    slot, pending[mine[0] if died else done[0]][1], exc, setbacks
                )
                for ref in reversed(mine if replaced else done):  # the oldest goes out first
                    _, back, batch_ref = pending.pop(ref)
                    consume([ref, batch_ref])
                    queue.append(back)
                if replaced:
                    returned.pop(slot, None)
                continue
            _, _, batch_ref = pending.pop(done[0])
            if slot in returned and not greedy:
                self.worker_wait.append(summary["started_at"] - returned[slot])
            returned[slot] = summary["ended_at"]
            fill()  # its worker has its next episode before on_done sees this one
            on_done(summary, batch_ref)

    def _attended(
        self, jobs: list[Job], greedy: bool, on_done, videos: dict[int, str], point: int | None
    ) -> None:
        """One robot: episodes one at a time, each reset, marked and labelled by the person."""
        queue, setbacks = list(reversed(jobs)), Counter()

        def worker():  # the robot's worker: replaced after a failure
            return self.actors.workers[0]

        while queue:
            job, refs = queue[-1], []

            def launch(job=job, refs=refs):
                refs.extend(worker().run_episode.remote(*job, greedy, videos.get(job[0])))
                return refs

            try:
                summary, batch = self.attended.run(
                    job, greedy, launch, lambda: worker().live.remote(), point
                )
            except ray.exceptions.RayError as exc:
                consume(refs)  # handled here: Ray need not print the worker's traceback
                what = f"eval {point}/{-1 - job[0]}" if greedy else f"episode {job[0]}"
                self.attended.lost(what, unwrapped(exc), describe(exc))
                self._failed(0, job, exc, setbacks)
                continue
            queue.pop()
            on_done(summary, batch)

    def _failed(self, slot: int, job: Job, exc: Exception, setbacks: Counter) -> bool:
        """Record an episode that did not finish; replace its worker (returns True) unless
        only the VLA connection dropped (the client has reconnected); stop once it keeps
        failing."""
        episode, seed = job
        if isinstance(unwrapped(exc), VLMUnusableError):
            raise RunStoppedError(str(unwrapped(exc))) from None
        if isinstance(exc, VLAConnectionLostError):
            kind = "vla_disconnect"
        elif isinstance(unwrapped(exc), RobotConnectionLostError):
            kind = "robot_disconnect"  # a robot server restarted mid-episode
        elif isinstance(exc, ray.exceptions.RayActorError):
            kind = "worker_died"
        else:
            kind = "episode_error"
        # A lost link (a server restarted) is bounded apart from the episode's own failures.
        lost_link = kind in ("vla_disconnect", "robot_disconnect")
        setbacks[job, lost_link] += 1
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.metrics.faults.inc(tags={"kind": kind})
        error = describe(exc)
        self.log_failure(
            {"episode": episode, "seed": seed, "worker": slot, "kind": kind, "error": error}
        )
        if setbacks[job, lost_link] >= self.attempts:
            what = f"lost its connection ({kind})" if lost_link else "failed"
            raise RunError(
                f"episode {episode} (seed {seed}) {what} {setbacks[job, lost_link]} times "
                f"(runtime.episode_attempts); last error: {error}"
            )
        if kind == "vla_disconnect":  # the client has reconnected: the worker goes on
            return False
        self.actors.replace_worker(slot)
        return True
