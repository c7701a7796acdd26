"""The Learner actor: Q-ensemble, optimiser and the one shared replay buffer.

It trains on its own thread while the actor keeps answering calls (a threaded Ray
actor), so workers polling for weights never wait behind a gradient step. Training is
paced by data: each stored transition past warm-up adds `updates_per_step` gradient
steps to a budget the thread spends; `wait_idle` lets the driver line evaluation points
up with a fully spent budget, so a run's update count is a function of its data.

Weights are published as a Ray object every `publish_every` steps and whenever the
budget runs dry; workers poll before each decision and fetch only a newer version.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import ray
import torch

from sarl_dist.config import Config
from sarl_dist.core.agent import SARLAgent
from sarl_dist.core.qnet import weights_to_numpy
from sarl_dist.core.replay import Batch, ReplayBuffer
from sarl_dist.runtime.checkpoint import write_atomic

AGENT_FILE, REPLAY_FILE, LEARNER_FILE = "agent.pt", "replay.npz", "learner.json"


class Learner:
    def __init__(self, cfg: Config, num_prompts: int) -> None:
        torch.set_num_threads(cfg.runtime.learner_threads)
        self.cfg = cfg
        self.agent = SARLAgent(num_prompts, cfg.q, cfg.learner, cfg.gamma, cfg.seed)
        self.replay = ReplayBuffer(cfg.learner.replay_capacity, num_prompts)
        self._rng = np.random.default_rng([cfg.seed, 17])
        self._committed: set[int] = set()
        self._budget = 0.0
        self._busy = False
        self._stop = False
        self._cv = threading.Condition()
        self._model_lock = threading.Lock()
        self._loss = float("nan")
        self._update_seconds = 0.0
        self._published: tuple[int, int, ray.ObjectRef] | None = None
        self._publish()
        self._thread = threading.Thread(target=self._train_loop, name="learner", daemon=True)
        if cfg.learns:
            self._thread.start()

    def add_episode(self, episode_id: int, batch: Batch) -> bool:
        """Store a whole episode once; a repeated id is ignored (returns False)."""
        with self._cv:
            if episode_id in self._committed:
                return False
            before = self.replay.added
            self.replay.add(batch)
            self._committed.add(episode_id)
            if self.cfg.learns:
                eligible = self.replay.added - max(before, self.cfg.learner.warmup)
                self._budget += max(0, eligible) * self.cfg.learner.updates_per_step
            self._cv.notify_all()
        return True

    def poll(self, version: int) -> tuple[int, int, int, list[ray.ObjectRef] | None]:
        """(version, its update count, current update count, [weights] if newer than `version`)."""
        published_version, published_updates, ref = self._published
        fresh = [ref] if published_version != version else None
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
        }

    def save(self, directory: str) -> None:
        path = Path(directory)
        with self._cv, self._model_lock:
            write_atomic(path / AGENT_FILE, self.agent.state_bytes())
            self.replay.save(path / REPLAY_FILE)
            meta = {"committed": sorted(self._committed), "budget": self._budget}
            write_atomic(path / LEARNER_FILE, json.dumps(meta).encode())

    def load(self, directory: str) -> dict:
        path = Path(directory)
        with self._cv, self._model_lock:
            self.agent.load_state_bytes((path / AGENT_FILE).read_bytes())
            self.replay = ReplayBuffer.load(path / REPLAY_FILE)
            meta = json.loads((path / LEARNER_FILE).read_text())
            self._committed = set(meta["committed"])
            self._budget = float(meta["budget"])
            self._cv.notify_all()
        self._publish()
        return self.stats()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    def _publish(self) -> None:
        with self._model_lock:
            weights, updates = weights_to_numpy(self.agent.q), self.agent.updates
        version = 0 if self._published is None else self._published[0] + 1
        self._published = (version, updates, ray.put(weights))

    def _train_loop(self) -> None:
        lcfg = self.cfg.learner
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
            with self._cv:
                dry = self._budget < 1
            if dry or self.agent.updates - self._published[1] >= lcfg.publish_every:
                self._publish()
            with self._cv:
                self._busy = False
                self._cv.notify_all()
