"""The person-in-the-loop pieces of the real-robot mode, without a robot: the terminal
protocol, relabelling by the person's answer, demonstrations as transitions, and the
config rules of a one-robot run."""

import io
import time

import numpy as np
import pytest

from sarl_dist.config import ConfigError
from sarl_dist.core.demos import DEMO_EPISODE, DemoError, load_demos, save_demo
from sarl_dist.core.prompt_cache import RESET_ID
from sarl_dist.robot.operator import Operator, OperatorQuitError, relabel
from sarl_dist.testing import make_batch, run_sarl, tiny_config, write_demos

ROBOT = ("env.kind=robot", "env.task=put the carrot on the plate", "runtime.num_workers=1")


def _operator(script: str) -> tuple[Operator, io.StringIO]:
    out = io.StringIO()
    operator = Operator(io.StringIO(script), out)
    time.sleep(0.05)  # the reader thread has queued the script
    return operator, out


def test_the_person_confirms_marks_and_labels_in_order():
    operator, out = _operator("\ns\n\nmaybe\nn\n\ny\nq\n")
    assert operator.confirm_reset("episode 0") > 0
    assert operator.success_now()  # "s" typed during the episode
    assert not operator.success_now()  # consumed once
    assert operator.label("episode 0", default=True) is True  # Enter takes the default
    assert operator.label("episode 1", default=None) is False  # "maybe" is asked again
    assert "answer y or n" in out.getvalue()
    operator.confirm_reset("episode 2")  # the empty line
    assert not operator.success_now()  # "y" is not the success key: it stays queued
    assert operator.label("episode 2", default=None) is True
    with pytest.raises(OperatorQuitError, match="stopped the run"):
        operator.confirm_reset("episode 3")


def test_a_closed_terminal_stops_the_run_instead_of_hanging():
    operator, _ = _operator("\n")
    operator.confirm_reset("episode 0")
    with pytest.raises(OperatorQuitError, match="end of input"):
        operator.label("episode 0", default=None)


def test_the_label_decides_the_final_reward_and_termination():
    # Three decisions; the worker saw no success (rewards 0, cap not terminal).
    batch = make_batch([1, 2, 3], [2, 3, 2], [0, 0, 0], [0, 0, 0], [2, 3, 4], [[2, 3]] * 3, 8)
    yes = relabel(batch, True, bootstrap_on_timeout=True)
    assert yes.reward.tolist() == [0, 0, 1] and yes.done.tolist() == [0, 0, 1]
    no = relabel(yes, False, bootstrap_on_timeout=True)
    assert no.reward.tolist() == [0, 0, 0] and no.done.tolist() == [0, 0, 0]
    assert relabel(yes, False, bootstrap_on_timeout=False).done.tolist() == [0, 0, 1]
    assert batch.reward.tolist() == [0, 0, 0]  # the worker's batch is left as it was


def test_demonstrations_become_transitions_with_their_prompts(tmp_path):
    prompts = ["pick up the carrot", "put it on the plate"]
    write_demos(tmp_path, prompts, image_hw=(96, 128), state_dim=7, failed=(1,))
    demos = load_demos(tmp_path)
    assert [d.prompts for d in demos] == [tuple(prompts)] * 2
    batch = demos[0].batch({"pick up the carrot": 5, "put it on the plate": 6}, 16)
    assert batch.image.shape == (2, 64, 64, 3) and batch.proprio.shape == (2, 8)
    assert batch.proprio[:, 7].tolist() == [0, 0]  # a 7-d state is zero-padded to 8
    assert batch.prompt.tolist() == [5, 6]
    assert batch.reward.tolist() == [0, 1] and batch.done.tolist() == [0, 1]
    assert np.flatnonzero(batch.next_mask[0]).tolist() == [RESET_ID, 5, 6]
    assert np.array_equal(batch.next_image[0], batch.image[1])
    failed = demos[1].batch({"pick up the carrot": 5, "put it on the plate": 6}, 16)
    assert failed.reward.tolist() == [0, 0] and failed.done.tolist() == [0, 0]
    assert DEMO_EPISODE < 0  # never an evaluation episode's number (-1 - j for small j)


def test_a_bad_demonstration_is_named(tmp_path):
    save_demo(tmp_path / "short.npz", np.zeros((2, 8, 8, 3)), np.zeros((2, 7)), ["a", "b"])
    with pytest.raises(DemoError, match=r"short\.npz: 2 prompts need 3 images"):
        load_demos(tmp_path)
    with pytest.raises(DemoError, match=r"no \.npz demonstrations"):
        load_demos(tmp_path / "missing")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("env.kind=robot",), "env: task: a robot's task is its sentence"),
        ((*ROBOT, "runtime.num_workers=2"), "one robot, so one worker"),
        ((*ROBOT, "method=oracle"), "oracle needs a known atomic sequence"),
        ((*ROBOT, "env.robot.address=127.0.0.1:8765"), "must start with ws://"),
        ((*ROBOT, "env.robot.action_dim=5"), "safety.action_low has 7 values"),
        ((*ROBOT, "env.robot.vla_keys={observation/image: primary}"), "use images.NAME"),
        ((*ROBOT, "env.robot.ask_labels=false"), "needs a reward_classifier"),
        ((*ROBOT, "env.robot.safety.workspace_low=[11, 0, 0]"), "workspace_low must not exceed"),
        ((*ROBOT, "vlm.refresh_steps=0"), "vlm.refresh_steps"),
    ],
)
def test_robot_configs_are_checked_before_anything_moves(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(*overrides)


def test_train_without_a_robot_server_fails_at_once_and_creates_nothing(tmp_path):
    out = tmp_path / "run"
    overrides = ["env.robot.connect_timeout=1", "env.robot.address=ws://127.0.0.1:9"]
    args = ["configs/robot_sim.yaml", "--out", str(out), *(f"--set={o}" for o in overrides)]
    done = run_sarl("train", *args)
    assert done.returncode == 1
    assert "error: no robot server at ws://127.0.0.1:9 after 1s" in done.stderr
    assert not out.exists()
