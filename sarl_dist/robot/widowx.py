"""A WidowX through the Bridge stack's own client (rail-berkeley/bridge_data_robot).

On the robot PC, Bridge's action server (`widowx_env_service.py --server`) owns the arm
and its cameras; this backend is its client, so `sarl robot-server` runs beside it:

    sarl robot-server --backend sarl_dist.robot.widowx:make --config configs/widowx_real.yaml

Bridge's observation holds "image" (the primary camera, 3 x S x S floats in [0, 1]) and
"state" (x, y, z, roll, pitch, yaw, gripper); actions are 7-d deltas of the same, sent
with `step_action` (blocking for one control period). Bridge has no halt command: each
step is one short blocking move, so "stop" means the server sends no further action.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from sarl_dist.config import EnvConfig
from sarl_dist.robot.backends import RobotBackend

log = logging.getLogger(__name__)
IMAGE_SIZE = 256
OBSERVATION_WAIT_S = 30.0


class WidowXBackend(RobotBackend):
    name = "widowx"
    action_dim = 7
    cameras = ("primary",)
    state_dim = 7

    def __init__(self, host: str, port: int, env_params: dict[str, Any] | None = None) -> None:
        try:
            from widowx_envs.widowx_env_service import WidowXClient, WidowXConfigs, WidowXStatus
        except ImportError as exc:
            raise ImportError(
                "the WidowX backend needs Bridge's widowx_envs (github.com/rail-berkeley/"
                f"bridge_data_robot) on the robot PC: {exc}"
            ) from None
        self._ok = WidowXStatus.SUCCESS
        self.client = WidowXClient(host=host, port=port)
        params = {**WidowXConfigs.DefaultEnvParams, **(env_params or {})}
        status = self.client.init(params, image_size=IMAGE_SIZE)
        if status != self._ok:
            raise RuntimeError(f"the WidowX action server at {host}:{port} answered {status}")
        self._obs = self._wait_for_observation()

    def _wait_for_observation(self) -> dict[str, Any]:
        deadline = time.monotonic() + OBSERVATION_WAIT_S
        while (obs := self.client.get_observation()) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no WidowX observation within {OBSERVATION_WAIT_S:.0f} s")
            time.sleep(0.1)
        return obs

    def _check(self, status: Any, what: str) -> None:
        if status != self._ok:
            raise RuntimeError(f"WidowX {what} failed (status {status})")

    def observe(self) -> dict[str, Any]:
        self._obs = self._wait_for_observation()
        image = np.asarray(self._obs["image"], np.float32).reshape(3, IMAGE_SIZE, IMAGE_SIZE)
        state = np.asarray(self._obs["state"], np.float32).reshape(-1)
        return {
            "images": {"primary": (image.transpose(1, 2, 0) * 255).astype(np.uint8)},
            "state": state,
            "eef_pos": state[:3],
            "extra": {},
        }

    def eef_pos(self) -> np.ndarray:
        return np.asarray(self._obs["state"], np.float32).reshape(-1)[:3]

    def apply(self, action: np.ndarray) -> None:
        self._check(self.client.step_action(np.asarray(action, np.float64), blocking=True), "step")
        self._obs = self._wait_for_observation()

    def begin_episode(self, seed: int) -> None:
        self._check(self.client.reset(), "reset")
        self._obs = self._wait_for_observation()

    def home(self, max_steps: int) -> int:
        self.begin_episode(0)
        return 0

    def stop(self) -> None:
        log.warning("WidowX: no further actions are sent (Bridge has no halt command)")

    def close(self) -> None:
        self.client.stop()


def make(env_cfg: EnvConfig) -> WidowXBackend:
    """`--backend sarl_dist.robot.widowx:make`: the action server at env.robot.widowx, its
    workspace boundaries set from env.robot.safety (Bridge clips to them as well)."""
    host, _, port = env_cfg.robot.widowx.rpartition(":")
    s = env_cfg.robot.safety
    bounds = [[*s.workspace_low, -1.57, 0.0], [*s.workspace_high, 1.57, 0.0]]
    return WidowXBackend(host, int(port), {"override_workspace_boundaries": bounds})
