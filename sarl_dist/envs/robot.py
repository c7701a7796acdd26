"""One arm behind the robot server (sarl robot-server), as an environment like any other.

The worker drives it exactly as it drives LIBERO: a decision runs the VLA under a prompt
for `decision_steps` low-level steps (down to one, as on the real WidowX), each step one
command to the server, whose reply carries the new observation. The server owns safety
(clipping, workspace, stop); this side owns the episode's wall-clock cap and reports
every clipped action with the episode. Success is what the person marks ("success now")
or what the optional reward classifier sees; the person's label at the end of the
episode is final (the driver relabels the episode's last transition with it).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sarl_dist.config import EnvConfig
from sarl_dist.envs.base import Env, EnvSpec, Observation
from sarl_dist.observation import IMAGE_SIZE, proprio, resize, resize_with_pad
from sarl_dist.wire import api_key_from_env

MAX_LOGGED_EVENTS = 20  # clip events kept verbatim per episode (all are counted)


def spec(cfg: EnvConfig) -> EnvSpec:
    return EnvSpec(
        task=str(cfg.task),
        max_decisions=cfg.max_decisions,
        decision_steps=cfg.decision_steps,
        action_dim=cfg.robot.action_dim,
        labelled=cfg.robot.ask_labels,
        bootstrap_truncated=cfg.bootstrap_truncated,
    )


def make(cfg: EnvConfig) -> RobotEnv:
    return RobotEnv(cfg)


def atomic_prompts(cfg: EnvConfig) -> tuple[str, ...]:
    raise ValueError("a robot's task has no known atomic prompt sequence")


def robot_client(
    cfg: EnvConfig, connect_timeout: float | None = None, request_timeout: float | None = None
):
    """A connection to the configured robot server; its key comes from the environment only
    (never from a config file). Timeouts default to env.robot's."""
    from sarl_dist.robot.client import RobotClient

    r = cfg.robot
    return RobotClient(
        r.address,
        api_key_from_env(r.api_key_env, "env.robot.api_key_env"),
        r.connect_timeout if connect_timeout is None else connect_timeout,
        r.request_timeout if request_timeout is None else request_timeout,
    )


def load_classifier(path: str) -> Callable[[dict[str, Any]], float]:
    """`module:function`, called with the robot's observation, returns P(success)."""
    module, _, name = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"env.robot.reward_classifier: cannot load {path!r} ({exc})") from None
    if not callable(fn):
        raise ValueError(f"env.robot.reward_classifier: {path!r} is not callable")
    return fn


class RobotEnv(Env):
    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg, self.rcfg = cfg, cfg.robot
        self.spec = spec(cfg)
        self.classifier = (
            load_classifier(self.rcfg.reward_classifier) if self.rcfg.reward_classifier else None
        )
        self.client = robot_client(cfg)
        meta = self.client.metadata
        if meta.get("action_dim") != self.rcfg.action_dim:
            raise ValueError(
                f"env.robot.action_dim={self.rcfg.action_dim} but the robot server at "
                f"{self.rcfg.address} takes actions of width {meta.get('action_dim')}"
            )
        cameras = set(meta.get("cameras", ()))
        wanted = {self.rcfg.q_camera} | {
            f.removeprefix("images.") for f in self.rcfg.vla_keys.values() if f != "state"
        }
        if wanted - cameras:
            raise ValueError(
                f"env.robot: the robot server has cameras {sorted(cameras)}, the config reads "
                f"{sorted(wanted - cameras)} (q_camera, vla_keys)"
            )
        self._reply: dict[str, Any] = {}
        self._begin_episode_state()

    def _begin_episode_state(self) -> None:
        self._started = time.monotonic()
        self._success = self._stopped = self._timed_out = False
        self._clipped: list[dict] = []
        self._clip_count = 0
        self._classifier_max = 0.0

    def _take(self, reply: dict[str, Any]) -> None:
        self._reply = reply
        self._success = self._success or bool(reply.get("success"))
        self._stopped = self._stopped or bool(reply.get("stopped"))
        events = reply.get("clipped") or []
        self._clip_count += len(events)
        self._clipped += events[: max(0, MAX_LOGGED_EVENTS - len(self._clipped))]
        if self.classifier is not None and not self._success:
            p = float(self.classifier(reply["observation"]))
            self._classifier_max = max(self._classifier_max, p)
            self._success = p >= self.rcfg.classifier_threshold

    # ---------------------------------------------------------------- episode
    def reset(self, seed: int, init_index: int | None = None) -> None:
        """Only called once the person has confirmed the scene is reset (the driver asks).
        A robot server restarted since the last episode is reconnected to here: nothing
        was moving, so the episode can begin on the new connection."""
        from sarl_dist.robot.client import RobotConnectionLostError

        self._begin_episode_state()
        try:
            reply = self.client.begin_episode(int(seed))
        except RobotConnectionLostError:
            self.client.close()
            self.client = robot_client(self.cfg)
            reply = self.client.begin_episode(int(seed))
        self._take(reply)
        self._success = False  # nothing has been done yet

    def step(self, action: np.ndarray) -> None:
        self._take(self.client.execute(np.asarray(action, np.float32)[None]))
        if time.monotonic() - self._started > self.rcfg.safety.max_episode_seconds:
            self._timed_out = True
            self.client.stop()

    def success(self) -> bool:
        return self._success

    def truncated(self) -> bool:
        """The arm stopped (Ctrl-C, the wall-clock cap, a stop from the robot side)."""
        return self._stopped or self._timed_out

    def reset_to_home(self, max_steps: int) -> int:
        reply = self.client.home(max_steps)
        self._take(reply)
        return int(reply.get("steps", 0))

    def episode_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "clipped_actions": self._clip_count,
            "clip_events": self._clipped,
            "stopped": self._stopped,
            "timed_out": self._timed_out,
        }
        if self.classifier is not None:
            info["classifier_max"] = self._classifier_max
        return info

    # ---------------------------------------------------------------- observations
    def _field(self, name: str) -> np.ndarray:
        obs = self._reply["observation"]
        if name == "state":
            return np.asarray(obs["state"], np.float32)
        return np.asarray(obs["images"][name.removeprefix("images.")])

    def observe(self) -> Observation:
        scene = self._field(f"images.{self.rcfg.q_camera}")
        return Observation(
            image=resize(scene, IMAGE_SIZE), proprio=proprio(self._field("state")), scene=scene
        )

    def vla_observation(self, prompt: str) -> dict[str, Any]:
        size = self.rcfg.vla_image_size
        obs: dict[str, Any] = {}
        for key, name in self.rcfg.vla_keys.items():
            value = self._field(name)
            if name != "state" and size is not None:
                value = resize_with_pad(value, size)
            obs[key] = value
        if self.rcfg.pass_extra:
            obs.update(self._reply["observation"].get("extra", {}))
        obs["prompt"] = prompt
        return obs

    def close(self) -> None:
        self.client.close()
