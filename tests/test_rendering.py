"""What the cameras show, on every path that renders. A LIBERO scene (task 0, a fixed
seed) rendered directly on the thread that built it is the reference; the same scene
through the robot server (whose calls arrive on other threads), through the learner's
robot environment, in a Ray worker's stored transitions and in the run's videos must show
that picture, not only have its shape: a GL context used from the wrong thread renders
black frames of the right shape and dtype."""

from __future__ import annotations

import threading

import imageio.v3 as iio
import numpy as np
import pytest

from sarl_dist.envs import make_env
from sarl_dist.envs.libero import EnvError
from sarl_dist.observation import resize
from sarl_dist.testing import tiny_config

SEED, SIZE = 7, 96
LIBERO = ("env.kind=libero", f"env.libero.camera_size={SIZE}", "env.libero.settle_steps=5")


def shows_a_scene(image: np.ndarray) -> bool:
    """A table scene, not black, white or noise on black (the broken render: mean ~0.04)."""
    return 30 < image.mean() < 220 and image.std() > 15


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.fixture(scope="module")
def reference():
    env = make_env(tiny_config(*LIBERO))
    env.reset(SEED)
    obs = env.observe()
    wrist = env.render("robot0_eye_in_hand", SIZE)[::-1, ::-1]
    yield env, obs, wrist
    env.close()


def test_the_direct_render_shows_the_scene_and_other_threads_are_refused(reference):
    env, obs, wrist = reference
    assert shows_a_scene(obs.scene) and shows_a_scene(wrist)
    assert mean_difference(obs.image, resize(obs.scene, 64)) < 1  # the Q image is the scene
    failed: list[BaseException] = []

    def render_elsewhere():
        try:
            env.observe()
        except EnvError as exc:
            failed.append(exc)

    thread = threading.Thread(target=render_elsewhere)
    thread.start()
    thread.join()
    assert failed and "GL context belongs to the thread that built it" in str(failed[0])


def test_the_robot_server_and_the_robot_env_show_the_scene(reference, tmp_path):
    from sarl_dist.envs.robot import RobotEnv
    from sarl_dist.envs.sim_robot import SimRobot
    from sarl_dist.robot.client import RobotClient
    from sarl_dist.robot.safety import Safety
    from sarl_dist.robot.server import RobotServer

    _, obs, wrist = reference
    cfg = tiny_config(*LIBERO)
    robot = SimRobot(cfg.env)  # built here; the server calls it from its own thread
    server = RobotServer(robot, Safety(cfg.env.robot.safety), port=0).start_background(60)
    try:
        client = RobotClient(f"ws://127.0.0.1:{server.port}", connect_timeout=10)
        images = client.begin_episode(SEED)["observation"]["images"]
        client.close()
        assert shows_a_scene(images["primary"]) and shows_a_scene(images["wrist"])
        assert mean_difference(images["primary"], obs.scene) < 1
        assert mean_difference(images["wrist"], wrist) < 1
        robot_cfg = tiny_config(
            "env.kind=robot",
            "env.task=put both the alphabet soup and the tomato sauce in the basket",
            f"env.robot.address=ws://127.0.0.1:{server.port}",
            "runtime.num_workers=1",
        )
        learner_side = RobotEnv(robot_cfg.env)
        learner_side.reset(SEED)
        seen = learner_side.observe()
        learner_side.close()
        assert mean_difference(seen.scene, obs.scene) < 1
        assert mean_difference(seen.image, obs.image) < 1  # what the Q-ensemble is shown
    finally:
        server.stop()
        robot.close()


@pytest.mark.usefixtures("ray_cluster")
def test_a_ray_workers_transitions_and_videos_show_the_scene(tmp_path):
    from sarl_dist.runtime.checkpoint import latest
    from sarl_dist.runtime.driver import run_training, train_seed
    from sarl_dist.runtime.learner import REPLAY_FILE
    from sarl_dist.runtime.rundir import RunDir

    cfg = tiny_config(
        *LIBERO,
        "vla.kind=skill",
        "vlm.backend=template",
        "env.decision_steps=8",
        "env.max_decisions=1",
        "runtime.num_workers=1",
        "train.episodes=1",
        "train.checkpoint_every=1",
        "eval.every=1",
        "eval.episodes=1",
        "eval.videos=1",
        "eval.at_start=false",
    )
    run = RunDir.create(tmp_path / "run", cfg)
    run_training(cfg, run, show_progress=False)
    env = make_env(cfg)
    env.reset(train_seed(cfg, 0))
    want = env.observe()
    with np.load(latest(run.checkpoints) / REPLAY_FILE) as replay:
        stored = replay["image"][0]  # the Q image of training episode 0's first state
    assert shows_a_scene(stored) and mean_difference(stored, want.image) < 1
    env.reset(0, init_index=0)  # evaluation episode 0 starts from init state 0
    start = env.observe().scene
    env.close()
    (video,) = (run.path / "videos").glob("eval-*.mp4")
    first = iio.imread(video, index=0)  # after a few steps of motion, with the prompt drawn
    assert first.shape == start.shape and shows_a_scene(first)
    assert mean_difference(first[40:], start[40:]) < 12  # below the caption: the same scene
