"""Group commits: the Learner stores a group of episodes with one episode-log write, and a
restarted Learner restores every episode of every group, once, in commit order."""

import numpy as np

from sarl_dist.runtime.episode_log import EpisodeLog
from sarl_dist.runtime.faults import Faults
from sarl_dist.runtime.learner import Learner, LearnerSetup
from sarl_dist.testing import make_batch, tiny_config


def _episode(n: int, state: int):
    states = list(range(state, state + n))
    return make_batch(states, [1] * n, [0.0] * n, [0.0] * n, [s + 1 for s in states],
                      [[1, 2]] * n, num_prompts=32)  # fmt: skip


def test_a_group_is_one_log_entry_and_a_restart_restores_every_episode_once(tmp_path):
    cfg, log = tiny_config("learner.updates_per_step=0"), tmp_path / "log"
    learner = Learner(LearnerSetup.of(cfg), 32, str(tmp_path / "checkpoints"), str(log))
    assert (
        learner.add_episodes([1, 2, 3], _episode(2, 0), _episode(3, 10), _episode(4, 20))
        == [True] * 3
    )
    assert learner.add_episodes([3, 4], _episode(1, 30), _episode(5, 40)) == [False, True]
    assert learner.add_episode(4, _episode(5, 40)) is False
    assert len(list(log.iterdir())) == 2  # one write per group
    again = Learner(LearnerSetup.of(cfg), 32, str(tmp_path / "checkpoints"), str(log))
    assert again.restored == {"checkpoint": None, "episodes_replayed": 4}
    assert again.stats()["episodes_committed"] == 4 and again.replay.added == 14
    logged = list(EpisodeLog(log).read(5))  # from the 3rd episode (transitions 5..8) on
    assert [(seq, episode, len(batch)) for seq, episode, batch in logged] == [
        (5, 3, 4), (9, 4, 5)]  # fmt: skip
    assert np.array_equal(logged[1][2].image, _episode(5, 40).image)
    for actor in (learner, again):
        actor.stop()


def test_a_learner_set_to_die_after_an_episode_commits_no_further_one_of_its_group():
    faults = Faults(tiny_config("faults.kill_learner_at=6").faults, 0)
    assert faults.learner_groups(4, ["e5", "e6", "e7"]) == [["e5", "e6"], ["e7"]]
    assert faults.learner_groups(6, ["e7", "e8"]) == [["e7", "e8"]]  # after its restart
    assert faults.learner_groups(0, []) == []
