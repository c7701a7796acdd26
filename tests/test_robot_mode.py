"""The person-in-the-loop pieces of the real-robot mode, without a robot: the terminal
protocol, relabelling by the person's answer, demonstrations as transitions, and the
config rules of a one-robot run."""

import io
import os
import threading
import time

import numpy as np
import pytest

from sarl_dist.config import ConfigError
from sarl_dist.core.demos import DEMO_EPISODE, DemoError, load_demos, save_demo
from sarl_dist.core.interfaces import EnvSpec
from sarl_dist.core.prompt_cache import RESET_ID
from sarl_dist.runtime.attended import Operator, OperatorQuitError, relabel
from sarl_dist.testing import Person, make_batch, run_sarl, tiny_config, write_demos

ROBOT = ("env.kind=robot", "env.task=put the carrot on the plate", "runtime.num_workers=1")


class Terminal:
    """An Operator on a pipe, with a Person reading its output and typing into it."""

    def __init__(self) -> None:
        read_fd, self._write_fd = os.pipe()
        self.out = io.StringIO()
        self.operator = Operator(os.fdopen(read_fd), self.out)
        self.person = Person(self.out.getvalue, self.type)

    def type(self, line: str) -> None:
        os.write(self._write_fd, (line + "\n").encode())

    def close_input(self) -> None:
        os.close(self._write_fd)


def _read_ahead(t: Terminal, lines: int) -> None:
    """Wait until the operator's reader has taken in the lines typed ahead of a prompt, as
    it has long before any prompt a person could type ahead of (under load it can lag)."""
    deadline = time.monotonic() + 10
    while len(t.operator._lines) < lines and time.monotonic() < deadline:
        time.sleep(0.01)


def _in_thread(fn, *args):
    """Run fn(*args) on a thread; returns (thread, result list)."""
    result: list = []

    def run():
        try:
            result.append(fn(*args))
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_the_person_confirms_marks_labels_and_corrects_in_order():
    t = Terminal()
    confirm, done = _in_thread(t.operator.confirm_reset, "episode 0")
    t.person.answer("[episode 0] reset the scene", "")  # Enter alone starts nothing
    t.person.answer("type r + Enter once the scene is reset", "r")
    confirm.join(5)
    assert done and done[0] > 0 and "reset confirmed" in t.out.getvalue()
    t.operator.watch("episode 0")
    t.person.wait_for("running:")
    t.type("s")
    time.sleep(0.1)
    assert t.operator.key() == "s" and t.operator.key() is None  # consumed once
    labelling, label = _in_thread(t.operator.label, "episode 0", None)
    t.person.answer("[episode 0] success? [y/n]", "maybe")
    t.person.answer("success? [y/n]", "n")  # after "answer y or n", asked again
    t.person.answer("labelled FAILURE: Enter commits it, c + Enter changes it", "c")
    t.person.answer("success? [y/n]", "y")  # corrected before it counts
    t.person.answer("labelled SUCCESS", "")
    labelling.join(5)
    assert label == [True] and "answer y or n" in t.out.getvalue()
    quitting, quit_ = _in_thread(t.operator.confirm_reset, "episode 1")
    t.person.answer("[episode 1] reset the scene", "q")
    quitting.join(5)
    assert isinstance(quit_[0], OperatorQuitError) and "stopped the run" in str(quit_[0])


def test_what_is_typed_before_a_prompt_never_answers_it():
    t = Terminal()
    t.type("y")  # typed mid-episode, before "success?" appears
    t.type("")  # an extra Enter, before the next reset prompt
    t.type("r")  # even the reset key, typed ahead: the arm must not move on it
    _read_ahead(t, 3)
    labelling, label = _in_thread(t.operator.label, "episode 3", None)
    t.person.wait_for("[episode 3] success? [y/n]")
    time.sleep(0.3)
    assert label == []  # still waiting: nothing typed after the prompt yet
    t.type("n")
    t.person.answer("labelled FAILURE", "")
    labelling.join(5)
    assert label == [False]
    t.type("")
    t.type("r")
    _read_ahead(t, 2)
    confirm, done = _in_thread(t.operator.confirm_reset, "episode 4")
    t.person.wait_for("[episode 4] reset the scene")
    time.sleep(0.3)
    assert done == []  # the arm waits for a reset confirmed after the prompt
    t.type("r")
    confirm.join(5)
    assert done and done[0] > 0


def test_a_closed_terminal_stops_the_run_instead_of_hanging():
    t = Terminal()
    t.close_input()
    with pytest.raises(OperatorQuitError, match="end of input"):
        t.operator.confirm_reset("episode 0")


def test_the_label_decides_the_final_reward_and_termination():
    # Three decisions; the worker saw no success (rewards 0, cap not terminal).
    batch = make_batch([1, 2, 3], [2, 3, 2], [0, 0, 0], [0, 0, 0], [2, 3, 4], [[2, 3]] * 3, 8)
    bootstraps, terminates = EnvSpec("t", 3, 1, 7), EnvSpec("t", 3, 1, 7, bootstrap_truncated=False)
    yes = relabel(batch, True, bootstraps)
    assert yes.reward.tolist() == [0, 0, 1] and yes.done.tolist() == [0, 0, 1]
    no = relabel(yes, False, bootstraps)
    assert no.reward.tolist() == [0, 0, 0] and no.done.tolist() == [0, 0, 0]
    assert relabel(yes, False, terminates).done.tolist() == [0, 0, 1]
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


def test_homing_is_recorded_even_when_the_robot_homes_on_its_own_side():
    from sarl_dist.envs.base import Observation
    from sarl_dist.report.video import Recorder

    class HomesRemotely:  # as RobotEnv: the robot server runs the homing loop
        def __init__(self):
            self.frame = 0

        def observe(self):
            self.frame += 1
            image = np.full((32, 32, 3), 10 * self.frame, np.uint8)
            return Observation(image, np.zeros(8, np.float32), image)

        def step(self, action):
            raise AssertionError("homing must not step here")

        def reset_to_home(self, max_steps):
            return 0

    env = HomesRemotely()
    with Recorder(env) as recorder:
        recorder.prompt = "reset to home"
        env.reset_to_home(120)
    assert len(recorder.frames) == 2  # before and after: a homing-only episode has a video
    assert "reset_to_home" not in vars(env) and "step" not in vars(env)  # unwrapped after


def test_an_episode_that_did_not_move_is_not_asked_about():
    from sarl_dist.robot.backends import load_backend
    from sarl_dist.robot.safety import Safety
    from sarl_dist.robot.server import RobotServer
    from sarl_dist.runtime.attended import Attended

    cfg = tiny_config()
    arm = load_backend("sarl_dist.testing:fake_gym_arm", cfg.env)
    server = RobotServer(arm, Safety(cfg.env.robot.safety), port=0).start_background()
    robot = tiny_config(*ROBOT, f"env.robot.address=ws://127.0.0.1:{server.port}")
    t = Terminal()
    try:
        attended = Attended(robot, t.operator, lambda record: None)
        answers: dict = {}
        still = {"success": True, "moved": False, "decisions": 3, "steps": 0}
        assert attended._verdict("eval 10/0", still, answers) is False
        assert answers["source"] == "no_motion"
        assert "did not move" in t.out.getvalue() and "success?" not in t.out.getvalue()
    finally:
        server.stop()
