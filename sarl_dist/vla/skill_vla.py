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
_COMPOUND = re.compile(r" and (?:put|place|close|open|turn|pick)\b|\bboth\b|\bthen\b")


@dataclass(frozen=True)
class Command:
    kind: str  # "pick_place" | "pick" | "turn_on" | "turn_off"
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
}


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

    def parse(self, prompt: str, scene: dict[str, Any]) -> Command | None:
        text = normalize_prompt(prompt)
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
        yaw = self._grasp_yaw(command, scene) if phase in _YAW_PHASES else hand_yaw(hand)
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
        obj = np.asarray(scene["objects"][cmd.obj][:3], dtype=np.float64)
        lift, wall, _ = grasp_geometry(cmd.obj)
        grasp = obj + np.array([0.0, wall, lift])  # where the fingers close
        xy_to_obj = np.linalg.norm((grasp - eef)[:2])
        near = xy_to_obj < 0.03 and abs(eef[2] - grasp[2]) < 0.04
        settled = np.abs(np.asarray(scene["gripper_qvel"])).max() < 0.02  # fingers stopped
        gripping = closed and width > 0.004  # something between the fingers
        holding = gripping and settled and np.linalg.norm(grasp - eef) < 0.05
        dest = self._destination(cmd, scene)
        if not holding and dest is not None and self._placed(obj, dest):
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
            if xy_to_obj > (0.025 if eef[2] < grasp[2] + 0.06 else 0.01):
                hover = np.clip(eef[2], grasp[2] + 0.06, travel_z)
                return np.array([grasp[0], grasp[1], hover]), -1.0, "align"
            if eef[2] > grasp[2] + 0.012:
                return grasp, -1.0, "descend"
            return eef.copy(), 1.0, "grasp"
        if dest is None:
            return np.array([eef[0], eef[1], obj[2] + 0.2]), 1.0, "lift"
        offset = eef - obj  # carry the object, not the fingers, over the destination
        clearance = 0.18 if cmd.relation == "in" else 0.12  # containers have rims
        carry_z = dest[2] + clearance + offset[2]  # the object, not the fingers, clears it
        xy_to_dest = np.linalg.norm((obj - dest)[:2])
        if xy_to_dest > 0.02:
            if eef[2] < carry_z - 0.06 and xy_to_dest > 0.05:
                return np.array([eef[0], eef[1], carry_z]), 1.0, "lift"
            return np.array([dest[0] + offset[0], dest[1] + offset[1], carry_z]), 1.0, "carry"
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
    def _destination(cmd: Command, scene) -> np.ndarray | None:
        if cmd.kind != "pick_place" or cmd.dest is None:
            return None
        where = scene["sites"].get(cmd.dest, scene["objects"].get(cmd.dest))
        dest = np.asarray(where[:3], dtype=np.float64)
        if cmd.relation in ("left", "right"):
            dest = dest + np.array([0.0, -0.1 if cmd.relation == "left" else 0.1, 0.0])
        return dest

    @staticmethod
    def _placed(obj: np.ndarray, dest: np.ndarray) -> bool:
        """The object rests at the destination: the skill is done, whatever did it."""
        return np.linalg.norm((obj - dest)[:2]) < 0.04 and -0.03 < obj[2] - dest[2] < 0.08

    @staticmethod
    def _grasp_yaw(cmd: Command | None, scene) -> float:
        """Hand yaw for grasping: across the object's thin side when it needs aligning."""
        if cmd is None or cmd.obj not in scene["objects"] or not grasp_geometry(cmd.obj)[2]:
            return 0.0
        x, y, z, w = np.asarray(scene["objects"][cmd.obj][3:7], dtype=np.float64)
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)) + YAW_OFFSET
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
