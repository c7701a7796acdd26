"""The Learner actor: Q-ensemble, optimiser and the one shared replay buffer.

It trains on its own thread while the actor keeps answering calls (a threaded Ray
actor), so workers polling for weights never wait behind a gradient step. Training is
paced by data: each stored transition past warm-up adds `updates_per_step` gradient
steps to a budget the thread spends; `wait_idle` lets the driver line evaluation points
up with a fully spent budget, so a run's update count is a function of its data.

It trains on `learner.device` (a GPU when the run's placement gave it one, see
runtime/actors.py learner_gpus); weights are published as CPU NumPy arrays either way, as
a Ray object every `publish_every` steps and whenever the budget runs dry; workers poll
before each decision and fetch only weights they do not hold (told apart by object id,
which stays unique across a restart).

Given the run's directories, the Learner is durable: an episode is written to the episode
log before `add_episode` returns, and every (re)start - Ray restarts a dead Learner with
its original arguments - rebuilds the state from the newest sealed checkpoint plus the
log. Workers and the driver keep their handle: Ray routes it to the new process. Updates
made after the checkpoint are lost, but their budget is restored with the data, so they
are made again and a run's update count stays a function of its data.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch

from sarl_dist.config import Config, FaultsConfig, LearnerConfig, QConfig
from sarl_dist.core.agent import SARLAgent
from sarl_dist.core.qnet import weights_to_numpy
from sarl_dist.core.replay import Batch, ReplayBuffer
from sarl_dist.runtime import checkpoint as ckpt
from sarl_dist.runtime import compute
from sarl_dist.runtime.episode_log import EpisodeLog
from sarl_dist.runtime.faults import Faults, restarted
from sarl_dist.runtime.metrics import RunMetrics

AGENT_FILE, REPLAY_FILE, LEARNER_FILE = "agent.pt", "replay.npz", "learner.json"


@dataclass(frozen=True)
class LearnerSetup:
    """What the Learner reads of a run's config: its own and the Q-network's sections, the
    discount, the seed, whether the method learns at all, its threads, injected faults."""

    learner: LearnerConfig
    q: QConfig
    faults: FaultsConfig
    gamma: float
    seed: int
    learns: bool
    threads: int

    @classmethod
    def of(cls, cfg: Config) -> LearnerSetup:
        return cls(
            cfg.learner, cfg.q, cfg.faults, cfg.gamma, cfg.seed, cfg.learns,
            cfg.runtime.learner_threads,
        )  # fmt: skip


class Learner:
    def __init__(
        self,
        setup: LearnerSetup,
        num_prompts: int,
        checkpoints: str | None = None,
        episode_log: str | None = None,
        run_name: str = "local",
    ) -> None:
        torch.set_num_threads(setup.threads)
        self.setup, lcfg = setup, setup.learner
        self.metrics = RunMetrics(run_name)
        self.faults = Faults(setup.faults, setup.seed)
        self._checkpoints = Path(checkpoints) if checkpoints else None
        self.log = EpisodeLog(episode_log) if episode_log else None
        self.agent = SARLAgent(num_prompts, setup.q, lcfg, setup.gamma, setup.seed)
        self.replay = ReplayBuffer(lcfg.replay_capacity, num_prompts)
        self._rng = np.random.default_rng([setup.seed, 17])
        self._committed: set[int] = set()
        self._budget = 0.0
        self._busy = False
        self._stop = False
        self._cv = threading.Condition()
        self._model_lock = threading.Lock()
        self._publish_lock = threading.Lock()  # the training thread and wait_idle both publish
        self._loss = float("nan")
        self._update_seconds = 0.0
        self._published: tuple[int, int, ray.ObjectRef] | None = None
        self._version = -1
        self.restored = self._restore()
        self._publish()
        self._thread = threading.Thread(target=self._train_loop, name="learner", daemon=True)
        if setup.learns:
            self._thread.start()

    def add_episode(self, episode_id: int, batch: Batch) -> bool:
        """Store a whole episode once, durably; a repeated id is ignored (returns False)."""
        return self.add_episodes([episode_id], batch)[0]

    def add_episodes(self, episode_ids: list[int], *batches: Batch) -> list[bool]:
        """Store whole episodes once each, durably, with one episode-log write for the group
        (the driver groups the episodes that finished while its last group was in flight);
        a repeated id is ignored (False)."""
        with self._cv:
            fresh = [i not in self._committed for i in episode_ids]
            new = {i: b for i, b, f in zip(episode_ids, batches, fresh, strict=True) if f}
            for group in self.faults.learner_groups(len(self._committed), list(new.items())):
                if self.log is not None:
                    self.log.append(self.replay.added, group)
                for episode_id, batch in group:
                    self._store(episode_id, batch)
                self.faults.learner_committed(len(self._committed))
        return fresh

    def _store(self, episode_id: int, batch: Batch) -> None:
        before = self.replay.added
        self.replay.add(batch)
        self._committed.add(episode_id)
        self.metrics.replay_size.set(len(self.replay))
        if self.setup.learns:
            eligible = self.replay.added - max(before, self.setup.learner.warmup)
            self._budget += max(0, eligible) * self.setup.learner.updates_per_step
        self._cv.notify_all()

    def poll(self, held: str | None) -> tuple[int, int, int, list[ray.ObjectRef] | None]:
        """(version, its update count, current update count, [weights] unless the caller
        already holds the object with id `held`)."""
        published_version, published_updates, ref = self._published
        fresh = [ref] if ref.hex() != held else None
        return published_version, published_updates, self.agent.updates, fresh

    def wait_idle(self, timeout: float | None = None) -> dict:
        """Block until the update budget is spent and the newest weights are published."""
        with self._cv:
            self._cv.wait_for(lambda: self._stop or (self._budget < 1 and not self._busy), timeout)
        if self._published[1] != self.agent.updates:
            self._publish()
        return self.stats()

    def stats(self) -> dict:
        return {
            "updates": self.agent.updates,
            "version": self._published[0],
            "replay_size": len(self.replay),
            "replay_added": self.replay.added,
            "episodes_committed": len(self._committed),
            "loss": self._loss,
            "update_seconds": self._update_seconds,
            "restarted": restarted(),
            "restored": self.restored,
        }

    def save(self, directory: str) -> dict:
        """Write the learner's part of a checkpoint; returns what the seal records."""
        path = Path(directory)
        with self._cv, self._model_lock:
            ckpt.write_atomic(path / AGENT_FILE, self.agent.state_bytes())
            ckpt.write_atomic(path / REPLAY_FILE, self.replay.to_bytes())
            meta = {
                "committed": sorted(self._committed),
                "budget": self._budget,
                "version": self._published[0],
            }
            ckpt.write_atomic(path / LEARNER_FILE, json.dumps(meta).encode())
            return {"replay_added": self.replay.added}

    def _restore(self) -> dict:
        """Rebuild what this Learner had before a restart (or a resumed run): the newest
        sealed checkpoint, then every episode logged after it, in commit order."""
        directory = ckpt.latest(self._checkpoints) if self._checkpoints else None
        if directory is not None:
            ckpt.verify(directory)
            self._load(directory)
        replayed = 0
        if self.log is not None:
            with self._cv:
                for seq, episode_id, batch in self.log.read(self.replay.added):
                    if seq != self.replay.added:
                        raise ckpt.CheckpointError(
                            f"episode log {self.log.directory} lacks transitions "
                            f"{self.replay.added}..{seq - 1}"
                        )
                    self._store(episode_id, batch)
                    replayed += 1
        return {"checkpoint": directory.name if directory else None, "episodes_replayed": replayed}

    def _load(self, directory: Path) -> None:
        try:
            self.agent.load_state_bytes((directory / AGENT_FILE).read_bytes())
            replay = ReplayBuffer.load(directory / REPLAY_FILE)
            meta = json.loads((directory / LEARNER_FILE).read_text())
            committed, budget = set(meta["committed"]), float(meta["budget"])
            version = int(meta["version"])
        except Exception as exc:  # a sealed but foreign or corrupt file: say which, load nothing
            raise ckpt.CheckpointError(
                f"checkpoint {directory} cannot be loaded: {type(exc).__name__}: {str(exc)[:300]}"
            ) from None
        if replay.num_prompts != self.replay.num_prompts:
            raise ckpt.CheckpointError(
                f"checkpoint {directory} has {replay.num_prompts} prompt slots, "
                f"the config {self.replay.num_prompts}"
            )
        self.replay, self._committed, self._budget = replay, committed, budget
        self._version = version

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    def _publish(self) -> None:
        """Publish the current weights as the next version; versions are unique and a newer
        one never gives way to an older one."""
        with self._publish_lock:
            with self._model_lock:
                weights, updates = weights_to_numpy(self.agent.q), self.agent.updates
            self._version += 1
            self._published = (self._version, updates, compute.put(weights))

    def _train_loop(self) -> None:
        lcfg = self.setup.learner
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or self._budget >= 1)
                if self._stop:
                    return
                batch = self.replay.sample(lcfg.batch_size, self._rng)
                self._budget -= 1
                self._busy = True
            start = time.perf_counter()
            with self._model_lock:
                stats = self.agent.update(batch)
            self._update_seconds += time.perf_counter() - start
            self._loss = stats.loss
            self.metrics.updates.inc()
            self.metrics.loss.set(stats.loss)
            with self._cv:
                dry = self._budget < 1
            if dry or self.agent.updates - self._published[1] >= lcfg.publish_every:
                self._publish()
            with self._cv:
                self._busy = False
                self._cv.notify_all()
