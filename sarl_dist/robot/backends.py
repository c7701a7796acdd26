"""The arm behind the robot server: what it needs from any robot, and how one is named.

`GymRobot` wraps any gym-style env, e.g. Bridge's widowx_envs on a WidowX; anything else
implements `RobotBackend` directly and is named as `module:factory`. `libero` names the
simulated robot (sarl_dist/envs/sim_robot.py: LIBERO where the hardware would be), which
lives with the environments and is loaded by name, so a robot PC's install of this
package needs neither LIBERO nor the learner's dependencies.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from sarl_dist.config import EnvConfig

# Backends known by a short name: `--backend libero` is LIBERO standing in for the arm.
BUILT_IN = {"libero": "sarl_dist.envs.sim_robot:SimRobot"}
# The observation keys a gym-style env returned by a `module:factory` is read with.
GYM_IMAGES = {"primary": "image", "wrist": "wrist_image"}
GYM_STATE_KEY = "state"


class BackendError(RuntimeError):
    """A backend could not be loaded or built; the message names its spec."""


class RobotBackend(ABC):
    """One arm. The server serialises every call but `stop`, which may come from any thread."""

    name: str
    action_dim: int
    cameras: tuple[str, ...]
    state_dim: int

    @abstractmethod
    def observe(self) -> dict[str, Any]:
        """{"images": {camera: uint8 HxWx3}, "state": float32 (state_dim,),
        "eef_pos": float32 (3,), "extra": dict}."""

    def eef_pos(self) -> np.ndarray:
        """The end effector's position, checked before every action; override it where
        `observe` is slow (it reads the cameras)."""
        return np.asarray(self.observe()["eef_pos"], np.float32)

    @abstractmethod
    def apply(self, action: np.ndarray) -> None:
        """Execute one low-level action, blocking for one control period."""

    @abstractmethod
    def begin_episode(self, seed: int) -> None:
        """A simulator resets its scene from the seed; a real arm moves to its home pose."""

    @abstractmethod
    def home(self, max_steps: int) -> int:
        """Reset-to-home: the arm back to its home pose, objects untouched; steps used."""

    @abstractmethod
    def stop(self) -> None:
        """Halt motion now; safe to call from any thread at any time."""

    @abstractmethod
    def close(self) -> None: ...


def _observation(out: Any) -> dict[str, Any]:
    """The observation of a gym-style reset() or step() result (obs, or a tuple from it)."""
    obs = out[0] if isinstance(out, tuple) else out
    if not isinstance(obs, dict):
        raise TypeError(f"expected an observation dict from the env, got {type(obs).__name__}")
    return obs


class GymRobot(RobotBackend):
    """Any gym-style env as the robot: `reset()` returns obs or (obs, info), `step(a)` a 4-
    or 5-tuple starting with obs; obs is a dict holding each camera's image (uint8 HxWx3)
    under `images[camera]` and the state vector under `state_key`, whose `eef_slice` is the
    end-effector position. Its `action_space.shape` and `observation_space[state_key].shape`
    give the widths the server announces. The env's done flags are ignored: the learner
    ends episodes. Optional methods used when present: `home()` (returns an observation
    like reset(); else reset() is the way home) and `stop()`.
    """

    def __init__(
        self,
        env: Any,
        images: dict[str, str],
        state_key: str,
        eef_slice: tuple[int, int] = (0, 3),
    ) -> None:
        self.env, self.images, self.state_key = env, dict(images), state_key
        self.eef_slice = slice(*eef_slice)
        self.name = type(env).__name__
        self.cameras = tuple(self.images)
        try:
            self.action_dim = int(np.prod(env.action_space.shape))
            self.state_dim = int(np.prod(env.observation_space[state_key].shape))
        except (AttributeError, KeyError, TypeError) as exc:
            raise TypeError(
                f"GymRobot needs {self.name}.action_space.shape and "
                f"observation_space[{state_key!r}].shape ({type(exc).__name__}: {exc})"
            ) from None
        self._obs: dict[str, Any] | None = None

    def _last(self) -> dict[str, Any]:
        if self._obs is None:
            raise RuntimeError(f"{self.name}: no observation yet (begin an episode first)")
        return self._obs

    def observe(self) -> dict[str, Any]:
        obs = self._last()
        images = {}
        for camera, key in self.images.items():
            image = np.asarray(obs[key])
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise TypeError(
                    f"{self.name}: observation[{key!r}] must be uint8 HxWx3, "
                    f"got {image.dtype} {image.shape}"
                )
            images[camera] = image
        state = np.asarray(obs[self.state_key], np.float32).reshape(-1)
        return {"images": images, "state": state, "eef_pos": state[self.eef_slice], "extra": {}}

    def eef_pos(self) -> np.ndarray:
        return np.asarray(self._last()[self.state_key], np.float32).reshape(-1)[self.eef_slice]

    def apply(self, action: np.ndarray) -> None:
        self._obs = _observation(self.env.step(action))

    def begin_episode(self, seed: int) -> None:
        self._obs = _observation(self.env.reset())

    def home(self, max_steps: int) -> int:
        """The env's own homing motion: not counted in control steps, so 0."""
        go_home = getattr(self.env, "home", None) or self.env.reset
        self._obs = _observation(go_home())
        return 0

    def stop(self) -> None:
        if callable(halt := getattr(self.env, "stop", None)):
            halt()

    def close(self) -> None:
        if callable(close := getattr(self.env, "close", None)):
            close()


def load_backend(spec: str, env_cfg: EnvConfig) -> RobotBackend:
    """The backend `spec` names: a BUILT_IN name (`libero`) or `module:factory`, where
    `factory(env_cfg)` returns a RobotBackend or a gym-style env. A gym-style env is read
    as GymRobot(env, GYM_IMAGES, GYM_STATE_KEY): cameras "primary" and "wrist" from
    obs["image"] and obs["wrist_image"], the state from obs["state"], the end-effector
    position its first three values."""
    try:
        spec = BUILT_IN.get(spec, spec)
        module, sep, attr = spec.partition(":")
        if not (sep and module and attr):
            raise ValueError("expected 'libero' or 'module:factory'")
        made = getattr(importlib.import_module(module), attr)(env_cfg)
        if isinstance(made, RobotBackend):
            return made
        if callable(getattr(made, "step", None)) and callable(getattr(made, "reset", None)):
            return GymRobot(made, GYM_IMAGES, GYM_STATE_KEY)
        raise TypeError(
            f"{attr} returned a {type(made).__name__}: neither a RobotBackend nor a gym-style env"
        )
    except Exception as exc:
        raise BackendError(f"robot backend {spec!r}: {type(exc).__name__}: {exc}") from exc
