"""A worker's weight polls: an episode's first decision polls afresh, later ones at least
POLL_EVERY_S apart (one per decision made the Learner a serial point)."""

from types import SimpleNamespace

import numpy as np

from sarl_dist.core.agent import build_q
from sarl_dist.runtime import compute, worker
from sarl_dist.runtime.learner import Learner, LearnerSetup
from sarl_dist.runtime.worker import POLL_EVERY_S, LearnerWeights
from sarl_dist.testing import image_of, tiny_config


def test_an_episode_polls_afresh_then_at_most_every_poll_interval(monkeypatch):
    cfg = tiny_config("learner.updates_per_step=0")
    learner = Learner(LearnerSetup.of(cfg), cfg.cache.capacity)
    weights = LearnerWeights(compute.LocalActor(learner), build_q(cfg.cache.capacity, cfg.q))
    clock = [100.0]
    monkeypatch.setattr(worker.time, "monotonic", lambda: clock[0])
    obs = SimpleNamespace(image=image_of(1), proprio=np.zeros(8, np.float32))

    def decision(after: float) -> int:  # the polls sent by a decision `after` s on
        clock[0] += after
        before = weights.polls
        weights.values(obs)
        weights.prefetch()  # while the VLA acts
        return weights.polls - before

    weights.reset()
    assert decision(0.0) == 1 and weights.version == 0  # the first, afresh
    assert [decision(0.005) for _ in range(3)] == [0, 0, 0]
    assert decision(POLL_EVERY_S) == 1
    weights.reset()  # a new episode, 0 s later: polls afresh anyway
    assert decision(0.0) == 1 and weights.polls == 1
    learner.stop()
