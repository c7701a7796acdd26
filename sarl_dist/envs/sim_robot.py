"""LIBERO where the hardware would be: a simulated arm behind the robot server, so the
whole real-robot path (server, safety, client, the learner's robot environment) runs and
is tested without one (`sarl robot-server --backend libero`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sarl_dist.config import EnvConfig
from sarl_dist.envs.libero import LiberoEnv
from sarl_dist.envs.rendering import GLThread
from sarl_dist.observation import rotate_180
from sarl_dist.robot.backends import RobotBackend


class SimRobot(RobotBackend):
    """A LIBERO scene as the robot: env_cfg.task is a task index of env_cfg.libero.suite.

    The scene lives on a thread of its own (GLThread): the server calls the robot from its
    own threads, and the cameras render only in the thread that built the scene."""

    action_dim = 7
    cameras = ("primary", "wrist")
    state_dim = 8

    def __init__(self, env_cfg: EnvConfig) -> None:
        self._gl = GLThread("libero-robot")
        self.env = self._gl.call(LiberoEnv, env_cfg)
        self.lcfg = env_cfg.libero
        self.name = f"libero:{self.lcfg.suite}/{env_cfg.task}"
        self.stops = 0  # nothing moves between steps in a simulator: stop is only counted

    def _observe(self) -> dict[str, Any]:
        size = self.lcfg.camera_size
        state = self.env.state()
        extra: dict[str, Any] = {"sim_success": self.env.success()}
        if self.lcfg.privileged:
            extra["privileged"] = self.env.privileged()
        return {
            "images": {
                "primary": rotate_180(self.env.render("agentview", size)),
                "wrist": rotate_180(self.env.render("robot0_eye_in_hand", size)),
            },
            "state": state,
            "eef_pos": state[:3].copy(),
            "extra": extra,
        }

    def observe(self) -> dict[str, Any]:
        return self._gl.call(self._observe)

    def eef_pos(self) -> np.ndarray:
        return self._gl.call(self.env.state)[:3]

    def apply(self, action: np.ndarray) -> None:
        self._gl.call(self.env.step, action)

    def begin_episode(self, seed: int) -> None:
        self._gl.call(self.env.reset, seed)

    def home(self, max_steps: int) -> int:
        return self._gl.call(self.env.reset_to_home, max_steps)

    def stop(self) -> None:
        self.stops += 1

    def close(self) -> None:
        self._gl.call(self.env.close)
        self._gl.close()
