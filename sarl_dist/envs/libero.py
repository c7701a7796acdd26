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

import contextlib
import re
import threading
from typing import Any

import numpy as np

from sarl_dist.config import EnvConfig
from sarl_dist.envs.base import Env, EnvSpec, Observation
from sarl_dist.envs.rendering import configure_rendering
from sarl_dist.geometry import quat_to_axis_angle
from sarl_dist.libero_setup import libero_suite, resolve_task, scene_name
from sarl_dist.observation import resize, resize_with_pad, rotate_180

NOOP = np.array([0.0] * 6 + [-1.0], dtype=np.float32)
ACTION_DIM = 7
_FIXTURE_SITE = re.compile(r"(region|burner|top_side)$")


# The atomic prompt sequence that solves a long-horizon task with a VLA that knows the
# LIBERO-90 skills: the test bed's upper bound (`sarl probe`, the oracle baseline). Every
# LIBERO-10 task, and libero_goal's one compound sentence. Each prompt is one the template
# proposer offers for its task (vlm/template.py), so SARL can learn the sequence: the
# decomposition steps in every query, a step beyond them only in some.
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
        # the stove is on from the start; "put the left moka pot on the stove" is one word
        # off the scene's taught "right" instruction, so the left pot is named another way
        "pick up the left moka pot and put it on the stove",
        "pick up the right moka pot and put it on the stove",
        "pick up the right moka pot and put it on the stove",  # it settles after the decision
    ),
    "put the yellow and white mug in the microwave and close it": (
        "put the yellow and white mug in the microwave",
        "close the microwave",
    ),
    "open the top drawer and put the bowl inside": (  # libero_goal
        # the drawer, once open, hangs over the bowl standing in front of it and no grasp
        # can come down to its rim (also LIBERO-90 task 8): the bowl is set aside first,
        # on the stove, in the scene's words the proposer offers (vlm/template.py)
        "pick up the bowl and put it on the stove",
        "open the top drawer",
        "put the bowl in the top drawer",
    ),
}


class EnvError(RuntimeError):
    """The simulator broke (NaN physics, renderer failure); the episode is void."""


def spec(cfg: EnvConfig, suite=None) -> EnvSpec:
    suite = suite if suite is not None else libero_suite(cfg.libero.suite)
    task = suite.get_task(resolve_task(suite, cfg.task))
    return EnvSpec(
        task.language,
        cfg.max_decisions,
        cfg.decision_steps,
        ACTION_DIM,
        bootstrap_truncated=cfg.bootstrap_truncated,
    )


def make(cfg: EnvConfig) -> LiberoEnv:
    return LiberoEnv(cfg)


def atomic_prompts(cfg: EnvConfig) -> tuple[str, ...]:
    """LIBERO-10's sequences are ORACLE_PROMPTS; any other LIBERO task is a single
    LIBERO-90-style instruction already."""
    task = spec(cfg).task
    return ORACLE_PROMPTS.get(task, (task,))


class OnceForward:
    """robosuite computes mj_forward twice per physics substep on the same state: in its
    step loop, then again in the arm controller's update. Inside this context a forward
    whose inputs (time, state, controls, applied forces, mocap) equal those the last one
    left is skipped, its kinematics, Jacobians and mass matrix being still in place; any
    mj_step advances the time, so the next forward runs. What differs from stock is the
    constraint solver's warm start for the next mj_step (a forward rewrites it), so
    trajectories agree to solver precision, not bit for bit: 7-19% more steps per second
    and the same successes on 100 atomic-sequence episodes of LIBERO-10
    (benchmarks/libero_budget.py, docs/performance.md). `libero.stock_stepping` turns it
    off. Scoped to one env step: nothing else touches the simulator meanwhile."""

    INPUTS = (
        "qpos", "qvel", "act", "ctrl", "qfrc_applied", "xfrc_applied",
        "mocap_pos", "mocap_quat", "eq_active",
    )  # fmt: skip

    def __init__(self, sim) -> None:
        self.sim, self._last = sim, None
        self._inputs = [getattr(sim.data, k) for k in self.INPUTS if hasattr(sim.data, k)]

    def _state(self) -> np.ndarray:
        return np.concatenate([[self.sim.data.time], *(a.ravel() for a in self._inputs)])

    def _forward(self) -> None:
        last = self._last  # after an mj_step the time alone tells: no copy of the state
        if last is None or self.sim.data.time != last[0] or not np.array_equal(self._state(), last):
            type(self.sim).forward(self.sim)  # normalises quaternions in qpos: read after
            self._last = self._state()

    def __enter__(self) -> OnceForward:
        self.sim.forward = self._forward
        return self

    def __exit__(self, *exc) -> None:
        del self.sim.forward


class LiberoEnv(Env):
    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg, self.lcfg = cfg, cfg.libero
        self.renderer = configure_rendering(self.lcfg.renderer)
        suite = libero_suite(cfg.libero.suite)
        task_index = resolve_task(suite, cfg.task)
        self.init_states = suite.get_task_init_states(task_index)
        self.scene = scene_name(suite.get_task(task_index))
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
        self._base = model.body_name2id("robot0_base")
        self._fixture_geoms = self._geoms_of(self._env.env.fixtures_dict)
        self._fixture_bodies = {
            name: self._env.env.obj_body_id[name] for name in self._env.env.fixtures_dict
        }
        self._obs: dict[str, Any] = {}
        self._success = False
        self.home, self.home_quat = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
        self._gl_thread = threading.get_ident()  # the only thread its cameras render in

    def _geoms_of(self, fixtures) -> dict[str, list[int]]:
        """The collision geoms of each body of each fixture (a drawer apart from its cabinet)."""
        model, ids = self.sim.model, self._env.env.obj_body_id
        owner = {ids[name]: name for name in fixtures}
        geoms: dict[str, list[int]] = {}
        for g in range(model.ngeom):
            if not (model.geom_contype[g] or model.geom_conaffinity[g]):
                continue
            body = own = model.geom_bodyid[g]
            while body and body not in owner:
                body = model.body_parentid[body]
            if body in owner:
                geoms.setdefault(model.body_id2name(own), []).append(g)
        return geoms

    def _fixture_boxes(self) -> dict[str, np.ndarray]:
        """World bounding box (min xyz, max xyz) of each fixture body as it is now: how high
        a caddy's walls stand, where an open drawer reaches."""
        model, data = self.sim.model, self.sim.data
        boxes = {}
        for name, geoms in self._fixture_geoms.items():
            rot = data.geom_xmat[geoms].reshape(-1, 3, 3)
            centre = data.geom_xpos[geoms] + np.einsum(
                "gij,gj->gi", rot, model.geom_aabb[geoms, :3]
            )
            half = np.einsum("gij,gj->gi", np.abs(rot), model.geom_aabb[geoms, 3:])
            box = np.concatenate([(centre - half).min(0), (centre + half).max(0)])
            boxes[name] = box.astype(np.float32)
        return boxes

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
        for robot in self._env.env.robots:  # the gripper's command ramp outlives episodes
            robot.gripper.current_action[:] = 0  # as built: every episode starts alike
        self._success = False
        for _ in range(self.lcfg.settle_steps):
            self._raw_step(NOOP)
        self.home = np.array(self._obs["robot0_eef_pos"], dtype=np.float64)
        self.home_quat = np.array(self._obs["robot0_eef_quat"], dtype=np.float64)
        self._success = bool(self._env.check_success())

    def _raw_step(self, action: np.ndarray) -> None:
        with contextlib.nullcontext() if self.lcfg.stock_stepping else OnceForward(self.sim):
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
        """A camera as LIBERO's observation has it (OpenGL convention, upside down).

        Only in the thread that built the env: elsewhere its GL context is not current and
        the frame would come back black (see envs/rendering.GLThread), so that is refused."""
        if threading.get_ident() != self._gl_thread:
            raise EnvError(
                f"rendering {camera} from thread {threading.current_thread().name}: the "
                "simulator's GL context belongs to the thread that built it (use GLThread)"
            )
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
        joints = {}  # articulation: joint position, then the moving part's world pose
        for n in self._joints:
            joint = model.joint_name2id(n)
            body = model.jnt_bodyid[joint]
            w, x, y, z = data.body_xquat[body]  # MuJoCo's order; objects' poses use x, y, z, w
            joints[n] = np.array(
                [data.qpos[model.jnt_qposadr[joint]], *data.body_xpos[body], x, y, z, w],
                np.float32,
            )
        return {
            "scene": self.scene,  # what a VLA recognises from its images
            "objects": objects,
            "sites": sites,
            "site_extents": extents,
            "joints": joints,
            "fixtures": self._fixture_boxes(),  # with their drawers and doors as they are now
            "fixture_poses": {  # where each fixture stands and which way it faces
                name: np.concatenate([data.body_xpos[i], np.roll(data.body_xquat[i], -1)]).astype(
                    np.float32
                )
                for name, i in self._fixture_bodies.items()
            },
            "eef_quat": np.asarray(o["robot0_eef_quat"], np.float32),
            "base": np.asarray(data.body_xpos[self._base], np.float32),  # where the arm stands
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
        from sarl_dist.geometry import orientation_error

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
