"""The WidowX backend against a stand-in for Bridge's widowx_envs client module (the real
one needs the robot's ROS stack): it converts Bridge's observation, forwards actions,
and refuses what Bridge reports as failed."""

import sys
import types

import numpy as np
import pytest

from sarl_dist.testing import tiny_config


class _Status:
    SUCCESS, EXECUTION_FAILURE = 1, 2


class _Client:
    """Bridge's WidowXClient surface: init, get_observation, step_action, reset, stop."""

    def __init__(self, host, port):
        self.address, self.actions, self.state = (host, port), [], np.zeros(7)
        self.fail_next = False

    def init(self, env_params, image_size):
        self.params, self.image_size = env_params, image_size
        return _Status.SUCCESS

    def get_observation(self):
        image = np.zeros((3, self.image_size, self.image_size))
        image[0] = 1.0  # red
        return {"image": image.reshape(-1), "state": self.state.copy()}

    def step_action(self, action, blocking=False):
        if self.fail_next:
            return _Status.EXECUTION_FAILURE
        self.actions.append((np.asarray(action), blocking))
        self.state[:3] += action[:3]
        return _Status.SUCCESS

    def reset(self):
        self.state[:] = 0
        return _Status.SUCCESS

    def stop(self):
        pass


@pytest.fixture
def bridge(monkeypatch):
    module = types.ModuleType("widowx_envs.widowx_env_service")
    module.WidowXClient, module.WidowXStatus = _Client, _Status
    module.WidowXConfigs = types.SimpleNamespace(DefaultEnvParams={"move_duration": 0.2})
    monkeypatch.setitem(sys.modules, "widowx_envs", types.ModuleType("widowx_envs"))
    monkeypatch.setitem(sys.modules, "widowx_envs.widowx_env_service", module)


def test_the_widowx_backend_speaks_bridges_client(bridge):
    from sarl_dist.robot.backends import load_backend

    cfg = tiny_config(
        "env.kind=robot",
        "env.task=put the carrot on the plate",
        "runtime.num_workers=1",
        "env.robot.widowx=robot-pc:5556",
        "env.robot.safety.workspace_low=[0.1, -0.15, -0.1]",
    )
    robot = load_backend("sarl_dist.robot.widowx:make", cfg.env)
    assert robot.client.address == ("robot-pc", 5556)
    assert robot.client.params["override_workspace_boundaries"][0][:3] == [0.1, -0.15, -0.1]
    assert robot.client.params["move_duration"] == 0.2  # Bridge's defaults kept
    robot.begin_episode(0)
    robot.apply(np.array([0.01, 0, 0, 0, 0, 0, 1], np.float32))
    obs = robot.observe()
    assert obs["images"]["primary"].shape == (256, 256, 3)
    assert obs["images"]["primary"][0, 0].tolist() == [255, 0, 0]
    assert robot.eef_pos()[0] == pytest.approx(0.01)
    assert robot.client.actions[0][1] is True  # blocking: one control period per step
    robot.client.fail_next = True
    with pytest.raises(RuntimeError, match="step failed"):
        robot.apply(np.zeros(7, np.float32))


def test_without_bridge_the_backend_says_what_to_install():
    from sarl_dist.robot.backends import BackendError, load_backend

    cfg = tiny_config("env.kind=robot", "env.task=t", "runtime.num_workers=1")
    with pytest.raises(BackendError, match="needs Bridge's widowx_envs"):
        load_backend("sarl_dist.robot.widowx:make", cfg.env)
