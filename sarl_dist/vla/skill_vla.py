"""The skill VLA: an embedded stand-in for pi0.5 fine-tuned on LIBERO-90.

It "understands" LIBERO-90's atomic instruction templates and executes them with
physical OSC_POSE delta actions computed from the object and fixture poses in the
observation it is sent (the `privileged` key the LIBERO adapter adds). It never reads the
simulator. It is stateless between requests, like a VLA: every chunk is computed from
the current observation alone (approach, descend, close, lift, carry, release follow from
where the gripper and the object are), so it works under replanning and after a reset.

Its "language model" is a small grammar with a documented failure model
(docs/skill_vla.md):

- Known templates: "pick up the X and put it in/on the Y", "put/place the X in/on/on top
  of the Y", "put the X to the left/right of the Y", "pick up the X", "turn on/off the
  stove".
- Compound or long-horizon prompts (two clauses joined by "and", "both X and Y", "then")
  collapse into one skill, fixed per sentence by a hash: for a fraction `p_partial` of
  sentences the first clause (or the first of "both" objects), for the others a
  misgrounded single pick-and-place.
- Unfamiliar object names are grounded to a scene object chosen by a hash of the words.
- A prompt one word away from an instruction LIBERO-90 taught in this scene is taken for
  that instruction (fine-tuned VLAs follow the memorised task when one word changes, as
  LIBERO-PRO measured): "... the back compartment ..." runs "... the front compartment ...".
- Gaussian action noise (`action_noise`) makes even known skills fail sometimes.

Everything random is drawn from a generator seeded at construction, so a server with a
given seed answers a given sequence of requests identically.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from sarl_dist.core.prompt_cache import normalize_prompt
from sarl_dist.vla.geometry import down_quat, hand_yaw, orientation_error

YAW_OFFSET = np.pi / 2  # fingers close across an aligned object's local x axis (untuned)
_YAW_PHASES = ("approach", "align", "descend", "grasp", "rise")
OPEN_WIDTH = 0.079  # finger gap of the fully open Panda gripper (measured 0.080)
HORIZON = 10
MIN_SPEED = 0.5  # smallest commanded speed while more than 4 mm from the target

# Words LIBERO's language uses for an object whose key says otherwise.
ALIASES: dict[str, tuple[str, ...]] = {
    "akita_black_bowl": ("black bowl", "bowl"),
    "cream_cheese": ("cream cheese box", "cream cheese"),
    "porcelain_mug": ("white mug",),
    "white_yellow_mug": ("yellow and white mug", "white and yellow mug"),
    "red_coffee_mug": ("red mug", "red coffee mug"),
    "chefmate_8_frypan": ("frying pan", "pan"),
    "black_book": ("book", "black book"),
    "desk_caddy": ("caddy", "desk caddy"),
    "flat_stove": ("stove",),
    "white_cabinet": ("cabinet",),
    "wooden_cabinet": ("cabinet",),
    "new_salad_dressing": ("salad dressing",),
}
# Where on a container or fixture things go, by the phrase after the relation.
PLACE_SITES = (
    ("back compartment of the caddy", "desk_caddy_1_back_contain_region"),
    ("front compartment of the caddy", "desk_caddy_1_front_contain_region"),
    ("left compartment of the caddy", "desk_caddy_1_left_contain_region"),
    ("right compartment of the caddy", "desk_caddy_1_right_contain_region"),
    ("top drawer of the cabinet", "_cabinet_1_top_region"),
    ("middle drawer of the cabinet", "_cabinet_1_middle_region"),
    ("bottom drawer of the cabinet", "_cabinet_1_bottom_region"),
    ("microwave", "microwave_1_heating_region"),
    ("stove", "flat_stove_1_cook_region"),
    ("basket", "basket_1_contain_region"),
)
_PICK_PLACE = re.compile(
    r"^(?:pick up|pick|grab) the (?P<obj>.+?) and (?:put|place) it "
    r"(?P<rel>in|on|into|onto|on top of|inside) (?:of )?the (?P<dst>.+)$"
)
_PUT = re.compile(
    r"^(?:put|place) the (?P<obj>.+?) "
    r"(?P<rel>in|on|into|onto|on top of|inside|to the left of|to the right of) the (?P<dst>.+)$"
)
_PICK = re.compile(r"^(?:pick up|grab|lift) the (?P<obj>.+)$")
_STOVE = re.compile(r"^turn (?P<state>on|off) the stove$")
_CLOSE_DRAWER = re.compile(
    r"^(?:close|shut|push in) the (?P<which>top|middle|bottom) drawer(?: of the cabinet)?$"
)
_COMPOUND = re.compile(r" and (?:put|place|close|open|turn|pick)\b|\bboth\b|\bthen\b")


@dataclass(frozen=True)
class Command:
    kind: str  # "pick_place" | "pick" | "turn_on" | "turn_off" | "close_drawer"
    obj: str  # object key in the scene
    dest: str | None = None  # an object or site key
    relation: str = "on"  # "in", "on", "left", "right"


# How the skill grasps an object, by its LIBERO type: height of the grasp point above the
# object's origin; offset along the fingers' closing axis (world y), so a mug too wide to
# straddle is pinched by its wall; whether to turn the hand to the object's yaw (an
# upright book is pinched across its thickness). Anything else: at its origin, square.
GRASPS: dict[str, tuple[float, float, bool]] = {
    "black_book": (0.1, 0.0, True),
    "porcelain_mug": (0.09, -0.045, False),
    "white_yellow_mug": (0.09, -0.045, False),
    "akita_black_bowl": (0.045, -0.047, False),  # its rim wall, like a mug's
}
# How far the front of a cabinet's drawer (its handle) sits from the drawer body's origin,
# toward the side it opens to (-y), by cabinet type.
DRAWER_FRONT = {"white_cabinet": 0.10}


def object_type(key: str) -> str:
    """LIBERO's object type of a scene key: alphabet_soup_1 -> alphabet_soup."""
    return re.sub(r"_\d+$", "", key)


def grasp_geometry(key: str) -> tuple[float, float, bool]:
    return GRASPS.get(object_type(key), (0.0, 0.0, False))


def object_phrases(key: str) -> tuple[str, ...]:
    base = object_type(key)
    return (*ALIASES.get(base, ()), base.replace("_", " "))


def _unit_hash(words: str) -> float:
    """A number in [0, 1) fixed by the words."""
    return int.from_bytes(hashlib.sha256(words.encode()).digest()[:8], "little") / 2**64


def _stable_choice(words: str, options: list[str]) -> str:
    return sorted(options)[int(_unit_hash(words) * len(options))]


class SkillVLA:
    """openpi BasePolicy-compatible: infer(obs) -> {"actions": (10, 7)}."""

    def __init__(
        self, seed: int = 0, action_noise: float = 0.05, p_partial: float = 0.5, gain: float = 20.0
    ) -> None:
        self.action_noise, self.p_partial, self.gain = action_noise, p_partial, gain
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    # ------------------------------------------------------------------ language
    def ground_place(self, phrase: str, scene: dict[str, Any]) -> str | None:
        """Where "in/on the <phrase>" puts things: a container's region site if it has one."""
        for words, suffix in PLACE_SITES:
            if phrase.strip() == words:
                site = next((s for s in scene["sites"] if s.endswith(suffix)), None)
                if site is not None:
                    return site
        return self.ground_object(phrase, scene)

    def ground_object(self, phrase: str, scene: dict[str, Any]) -> str | None:
        """The scene key a noun phrase names; unfamiliar words land on a hashed object."""
        objects = scene["objects"]
        phrase = phrase.strip()
        side = re.match(r"^(left|right) (.+)$", phrase)
        if side:  # "the left plate": of several matching objects, the one with smaller y
            same = sorted(
                (k for k in objects if side[2] in object_phrases(k)), key=lambda k: objects[k][1]
            )
            if same:
                return same[0] if side[1] == "left" else same[-1]
        for key in sorted(objects):
            if phrase in object_phrases(key):
                return key
        movable = [k for k in objects if not k.startswith(("basket", "plate"))]
        return _stable_choice(phrase, movable) if movable else None

    @staticmethod
    def recall(text: str, scene_name: str | None) -> str:
        """The instruction the VLA hears: a near-copy of a taught one is heard as that one."""
        from sarl_dist.envs.libero import libero90_instructions

        taught = libero90_instructions().get(scene_name, frozenset()) if scene_name else ()
        if text in taught:
            return text
        words = text.split()
        near = [
            t
            for t in taught
            if len(t.split()) == len(words)
            and sum(a != b for a, b in zip(t.split(), words, strict=True)) == 1
        ]
        return _stable_choice(text, near) if near else text

    def parse(self, prompt: str, scene: dict[str, Any]) -> Command | None:
        text = self.recall(normalize_prompt(prompt), scene.get("scene"))
        if _COMPOUND.search(text) and not _PICK_PLACE.match(text):
            return self._collapse(text, scene)
        for pattern in (_PICK_PLACE, _PUT):
            m = pattern.match(text)
            if m:
                obj = self.ground_object(m["obj"], scene)
                rel = m["rel"]
                relation = (
                    "left"
                    if "left" in rel
                    else "right"
                    if "right" in rel
                    else ("in" if rel in ("in", "into", "inside") else "on")
                )
                dest = self.ground_place(m["dst"], scene)
                return Command("pick_place", obj, dest, relation) if obj and dest else None
        m = _CLOSE_DRAWER.match(text)
        if m:
            drawer = next(
                (j for j in scene["joints"] if j.endswith(f"cabinet_1_{m['which']}_level")), None
            )
            return Command("close_drawer", drawer) if drawer else None
        m = _STOVE.match(text)
        if m:
            knob = next((j for j in scene["joints"] if j.endswith("stove_1_button")), None)
            return Command(f"turn_{m['state']}", knob) if knob else None
        m = _PICK.match(text)
        if m:
            obj = self.ground_object(m["obj"], scene)
            return Command("pick", obj) if obj else None
        return None

    def _collapse(self, text: str, scene: dict[str, Any]) -> Command | None:
        """A long-horizon prompt becomes one skill: partial, or misgrounded.

        Which of the two is fixed per sentence (a hash, like a trained model's consistent
        misreading), so repeating the sentence never completes its second part.
        """
        first = re.split(r" and (?=put|place|close|open|turn|pick)|,? then ", text)[0]
        first = re.sub(
            r"\bboth the (.+?) and the .+? (in|on|into|onto) the", r"the \1 \2 the", first
        )
        if _unit_hash(text) < self.p_partial:
            return self.parse(first, scene) if not _COMPOUND.search(first) else None
        objects = [k for k in scene["objects"] if not k.startswith(("basket", "plate"))]
        places = list(scene["sites"]) + [
            k for k in scene["objects"] if k.startswith(("basket", "plate"))
        ]
        if not objects or not places:
            return None
        return Command(
            "pick_place", _stable_choice(text, objects), _stable_choice(text[::-1], places)
        )

    # ------------------------------------------------------------------ control
    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        scene = obs.get("privileged")
        state = np.asarray(obs["observation/state"], dtype=np.float64)
        if scene is None:
            raise ValueError(
                "the skill VLA needs the 'privileged' observation key (env.libero.privileged)"
            )
        command = self.parse(str(obs["prompt"]), scene)
        target, grip, phase = self._target(command, state, scene)
        hand = np.asarray(scene["eef_quat"], dtype=np.float64)
        if phase in _YAW_PHASES:
            yaw = self._grasp_yaw(command, scene)
        elif command is not None and command.kind == "close_drawer":
            yaw = np.pi / 2  # the hand's long side along the drawer front, clear of the cabinet
        else:
            yaw = hand_yaw(hand) + self._fit_turn(command, scene)
        actions = self._chunk(state, hand, target, grip, yaw)
        return {"actions": actions, "skill_phase": phase}

    def _target(
        self, cmd: Command | None, state: np.ndarray, scene
    ) -> tuple[np.ndarray, float, str]:
        """(position target, gripper command, phase name) for this observation."""
        eef, width = state[:3], state[6] - state[7]
        closed = width < OPEN_WIDTH - 0.005
        if cmd is None:  # not understood: hold still
            return eef.copy(), 1.0 if closed else -1.0, "idle"
        if cmd.kind in ("turn_on", "turn_off"):
            return self._turn_knob(cmd, eef, closed, scene)
        if cmd.kind == "close_drawer":
            return self._close_drawer(cmd, eef, closed, scene)
        obj = np.asarray(scene["objects"][cmd.obj][:3], dtype=np.float64)
        lift, wall, _ = grasp_geometry(cmd.obj)
        grasp = obj + np.array([0.0, wall, lift])
        xy_to_obj = np.linalg.norm((grasp - eef)[:2])
        near = xy_to_obj < 0.03 and abs(eef[2] - grasp[2]) < 0.04
        settled = np.abs(np.asarray(scene["gripper_qvel"])).max() < 0.02  # fingers stopped
        gripping = closed and width > 0.004  # something between the fingers
        holding = gripping and settled and np.linalg.norm(grasp - eef) < 0.05
        dest = self._destination(cmd, scene)
        if not holding and dest is not None and self._placed(obj, dest, cmd, scene):
            return np.array([eef[0], eef[1], max(eef[2], grasp[2] + 0.12)]), -1.0, "done"
        if closed and not settled and near:  # still closing on it: keep still
            return eef.copy(), 1.0, "grasp"
        if not holding:
            if closed and not near:  # holding something else, or nothing: let go in place
                return eef.copy(), -1.0, "release"
            travel_z = grasp[2] + 0.15
            if xy_to_obj > 0.05:  # far: travel high, so nothing on the way is swept along
                if eef[2] < travel_z - 0.03:
                    return np.array([eef[0], eef[1], travel_z]), -1.0, "rise"
                return np.array([grasp[0], grasp[1], travel_z]), -1.0, "approach"
            if xy_to_obj > (0.025 if eef[2] < grasp[2] + 0.06 else 0.02):
                hover = np.clip(eef[2], grasp[2] + 0.06, travel_z)
                return np.array([grasp[0], grasp[1], hover]), -1.0, "align"
            if eef[2] > grasp[2] + 0.012:
                return grasp, -1.0, "descend"
            return eef.copy(), 1.0, "grasp"
        if dest is None:
            return np.array([eef[0], eef[1], obj[2] + 0.2]), 1.0, "lift"
        offset = eef - obj  # carry the object, not the fingers, over the destination
        clearance = self._clearance(cmd, scene)
        carry_z = dest[2] + clearance + offset[2]  # the object, not the fingers, clears it
        xy_to_dest = np.linalg.norm((obj - dest)[:2])
        if xy_to_dest > 0.035:  # closer than that, it is lowered while the rest is corrected
            if eef[2] < carry_z - 0.06 and xy_to_dest > 0.05:
                return np.array([eef[0], eef[1], carry_z]), 1.0, "lift"
            return np.array([dest[0] + offset[0], dest[1] + offset[1], carry_z]), 1.0, "carry"
        if abs(self._fit_turn(cmd, scene)) > 0.1:  # turn it to fit before lowering it in
            return np.array([dest[0] + offset[0], dest[1] + offset[1], carry_z]), 1.0, "turn"
        release_z = dest[2] + (0.06 if cmd.relation == "in" else 0.04) + offset[2]
        if eef[2] > release_z + 0.01:
            return np.array([dest[0] + offset[0], dest[1] + offset[1], release_z]), 1.0, "lower"
        return eef.copy(), -1.0, "release"

    @staticmethod
    def _turn_knob(
        cmd: Command, eef: np.ndarray, closed: bool, scene
    ) -> tuple[np.ndarray, float, str]:
        """Push a fin of a vertical-axis dial round an arc with closed fingers.

        The dial's fins sit every 90 degrees at its current angle q; the fingertips go
        down behind the fin nearest +x and sweep along the circle, always a little ahead
        of where they are (on: counter-clockwise, off: clockwise), until LIBERO's on/off
        threshold is passed. Stateless: every phase follows from q and where the hand is.
        """
        joint = np.asarray(scene["joints"][cmd.obj], dtype=np.float64)
        q, center = float(joint[0]), joint[1:]
        on = cmd.kind == "turn_on"
        if (on and q >= 0.7) or (not on and q <= 0.0):
            return np.array([eef[0], eef[1], center[2] + 0.15]), 1.0, "done"
        if not closed:
            return eef.copy(), 1.0, "close"
        sign, radius, push_z = (1.0 if on else -1.0), 0.036, center[2] + 0.055
        fin = (q + np.pi / 4) % (np.pi / 2) - np.pi / 4  # the fin nearest the +x direction
        rel = eef[:2] - center[:2]
        hand = np.arctan2(rel[1], rel[0])
        behind = sign * (fin - hand)  # > 0: the fingers are behind the fin
        on_circle = abs(np.linalg.norm(rel) - radius) < 0.012
        if abs(eef[2] - push_z) < 0.015 and on_circle and -0.15 < behind < 1.0:
            ahead = hand + sign * 0.45
            return (
                np.array(
                    [*(center[:2] + radius * np.array([np.cos(ahead), np.sin(ahead)])), push_z]
                ),
                1.0,
                "push",
            )
        start_angle = fin - sign * 0.6
        start = np.array(
            [*(center[:2] + radius * np.array([np.cos(start_angle), np.sin(start_angle)])), push_z]
        )
        if abs(eef[2] - push_z) < 0.015 and not (on_circle and behind > 0):
            return np.array([eef[0], eef[1], push_z + 0.08]), 1.0, "retreat"
        if np.linalg.norm((start - eef)[:2]) > 0.008:
            return np.array([start[0], start[1], max(eef[2], push_z + 0.06)]), 1.0, "approach"
        return start, 1.0, "descend"

    @staticmethod
    def _close_drawer(
        cmd: Command, eef: np.ndarray, closed: bool, scene
    ) -> tuple[np.ndarray, float, str]:
        """Push an open drawer shut by its front with closed fingers, the hand turned across.

        The drawer slides along y and opens toward -y; LIBERO counts it closed only past
        q = 0, so the push aims a little beyond the closed position. Stateless: the phase
        follows from q and where the hand is relative to the drawer's front.
        """
        joint = np.asarray(scene["joints"][cmd.obj], dtype=np.float64)
        q, body = float(joint[0]), joint[1:]
        front = body[1] - DRAWER_FRONT.get(cmd.obj.split("_1_")[0], 0.1)
        push_z, safe_z = body[2] + 0.045, body[2] + 0.15
        if q > 0.002:
            return np.array([eef[0], min(eef[1], front - 0.05), safe_z]), 1.0, "done"
        if not closed:
            return eef.copy(), 1.0, "close"
        lined_up = abs(eef[0] - body[0]) < 0.03 and eef[1] < front + 0.03
        if lined_up and abs(eef[2] - push_z) < 0.02:
            return np.array([body[0], front - q + 0.008, push_z]), 1.0, "push"
        start = np.array([body[0], front - 0.05, push_z])
        if lined_up and eef[1] < front - 0.02 and abs(eef[0] - body[0]) < 0.015:
            return start, 1.0, "descend"
        if eef[2] < safe_z - 0.03 and np.linalg.norm((start - eef)[:2]) > 0.03:
            return np.array([eef[0], eef[1], safe_z]), 1.0, "rise"
        return np.array([start[0], start[1], safe_z]), 1.0, "approach"

    @staticmethod
    def _destination(cmd: Command, scene) -> np.ndarray | None:
        if cmd.kind != "pick_place" or cmd.dest is None:
            return None
        where = scene["sites"].get(cmd.dest, scene["objects"].get(cmd.dest))
        dest = np.asarray(where[:3], dtype=np.float64)
        if cmd.relation in ("left", "right"):
            dest = dest + np.array([0.0, -0.1 if cmd.relation == "left" else 0.1, 0.0])
        return dest

    @staticmethod
    def _placed(obj: np.ndarray, dest: np.ndarray, cmd: Command, scene) -> bool:
        """The object rests at the destination: the skill is done, whatever did it."""
        half = scene.get("site_extents", {}).get(cmd.dest)
        if cmd.relation == "in" and half is not None:  # anywhere inside the region
            return bool(
                np.all(np.abs(obj - dest)[:2] < half[:2]) and abs(obj[2] - dest[2]) < half[2]
            )
        return np.linalg.norm((obj - dest)[:2]) < 0.04 and -0.03 < obj[2] - dest[2] < 0.08

    @staticmethod
    def _clearance(cmd: Command, scene) -> float:
        """How high above the destination to carry: over a container's rim, or a little."""
        if cmd.relation != "in":
            return 0.12
        extents = scene.get("site_extents", {})
        return extents[cmd.dest][2] + 0.07 if cmd.dest in extents else 0.18

    @staticmethod
    def _fit_turn(cmd: Command | None, scene) -> float:
        """Hand rotation that lines a held, yaw-grasped object up with a narrow region.

        A book goes into a caddy compartment only with its thin side across the
        compartment's narrow side; the object turns with the hand that holds it.
        """
        extents = scene.get("site_extents", {})
        if cmd is None or cmd.dest not in extents or not grasp_geometry(cmd.obj)[2]:
            return 0.0
        half = extents[cmd.dest]
        want = 0.0 if half[0] < half[1] else np.pi / 2  # thin axis along the narrow side
        return (want - SkillVLA._object_yaw(scene["objects"][cmd.obj]) + np.pi / 2) % np.pi - (
            np.pi / 2
        )

    @staticmethod
    def _object_yaw(pose: np.ndarray) -> float:
        x, y, z, w = np.asarray(pose[3:7], dtype=np.float64)
        return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))

    @staticmethod
    def _grasp_yaw(cmd: Command | None, scene) -> float:
        """Hand yaw for grasping: across the object's thin side when it needs aligning."""
        if cmd is None or cmd.obj not in scene["objects"] or not grasp_geometry(cmd.obj)[2]:
            return 0.0
        yaw = SkillVLA._object_yaw(scene["objects"][cmd.obj]) + YAW_OFFSET
        return (yaw + np.pi / 2) % np.pi - np.pi / 2  # the gripper is symmetric under 180 deg

    def _chunk(
        self, state: np.ndarray, quat: np.ndarray, target: np.ndarray, grip: float, yaw: float
    ) -> np.ndarray:
        """HORIZON actions toward the target, predicting the arm's progress step by step."""
        pos = state[:3].copy()
        rot = np.clip(2.0 * orientation_error(down_quat(yaw), quat), -0.5, 0.5)
        actions = np.zeros((HORIZON, 7), dtype=np.float32)
        for t in range(HORIZON):
            error = target - pos
            move = np.clip(self.gain * error, -1.0, 1.0)
            speed = np.linalg.norm(move)
            if 0 < speed < MIN_SPEED and np.linalg.norm(error) > 0.004:
                move *= MIN_SPEED / speed  # no slow exponential tail near the target
            move += self._rng.normal(0.0, self.action_noise, size=3)
            actions[t, :3] = np.clip(move, -1.0, 1.0)
            actions[t, 3:6] = rot if t == 0 else 0.0
            actions[t, 6] = grip
            pos = pos + 0.011 * actions[t, :3]  # ~11 mm per step at full command (measured)
        return actions
