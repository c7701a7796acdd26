"""What the skill VLA knows of LIBERO's articulated fixtures: drawers, doors, knobs.

The observation carries each articulated part's joint position and world pose
(`privileged["joints"]`: q, x, y, z, qx, qy, qz, qw). Where its handle is on the part
and what LIBERO calls open, closed, on and off is fixture knowledge a VLA fine-tuned on
LIBERO-90 has from its demonstrations; here it is a table measured from LIBERO's models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from sarl_dist.geometry import quat_to_matrix


@dataclass(frozen=True)
class Kind:
    """A family of articulated parts.

    motion: "slide" (a drawer: the part moves along its y axis, q < 0 is out) or "hinge"
    (turns about its z axis). states: predicate -> (low, high) range of q where it holds.
    handle: the grip point in the part's frame, per part name (None: any part).
    """

    motion: str
    states: dict[str, tuple[float, float]]
    handle: dict[str | None, tuple[float, float, float]]


DRAWER = Kind(
    "slide",
    {"open": (-1.0, -0.15), "close": (0.0, 1.0)},  # open from -0.14 to LIBERO: pulled well out
    {  # the handle bar in front of each drawer's face
        "top_level": (-0.003, -0.1016, 0.1839),
        "middle_level": (-0.003, -0.1016, 0.1104),
        "bottom_level": (-0.003, -0.1016, 0.0411),
    },
)
KINDS: dict[str, Kind] = {
    "wooden_cabinet": DRAWER,
    "white_cabinet": DRAWER,
    "microwave": Kind(
        "hinge",
        {"open": (-3.0, -1.3), "close": (-0.005, 1.0)},
        {None: (0.2375, -0.054, 0.0)},  # the door's vertical bar, from the hinge
    ),
    "flat_stove": Kind(
        "hinge",
        {"turnon": (0.5, 2.1), "turnoff": (-1.0, 0.0)},
        {None: (0.0, 0.0, 0.03)},  # the dial's grip ridge, along the part's y axis
    ),
}
_JOINT = re.compile(r"^(?P<fixture>.+?)_(?P<n>\d+)_(?P<part>.+)$")
# Fixtures whose regions are entered from the side, not from above (a microwave has a
# top, a shelf's layers have boards above them): the way out of the opening, in the
# fixture's own frame.
SIDE_ENTRY: dict[str, tuple[float, float]] = {
    "microwave": (0.0, -1.0),
    "wooden_two_layer_shelf": (0.0, -1.0),
}


@dataclass(frozen=True)
class Part:
    """One articulated part as the observation shows it."""

    joint: str
    kind: Kind
    q: float
    pos: np.ndarray  # the moving body's origin (a drawer's: on the cabinet's base)
    rot: np.ndarray  # its world rotation
    handle: np.ndarray  # world position of the grip point

    def local(self, v: tuple[float, float, float]) -> np.ndarray:
        return self.rot @ np.asarray(v, dtype=np.float64)


def part_of(key: str, scene: dict[str, Any]) -> str | None:
    """The joint a goal's fixture argument names.

    wooden_cabinet_1_top_region -> wooden_cabinet_1_top_level; flat_stove_1 ->
    flat_stove_1_button; microwave_1 -> microwave_1_microjoint.
    """
    joints = sorted(scene.get("joints", {}))
    if key.endswith("_region"):
        prefix = key.removesuffix("_region") + "_"
        return next((j for j in joints if j.startswith(prefix)), None)
    return next((j for j in joints if j.startswith(key + "_")), None)


def part(joint: str, scene: dict[str, Any]) -> Part | None:
    m = _JOINT.match(joint)
    kind = KINDS.get(m["fixture"]) if m else None
    if kind is None or joint not in scene.get("joints", {}):
        return None
    values = np.asarray(scene["joints"][joint], dtype=np.float64)
    rot = quat_to_matrix(values[4:8])
    offset = kind.handle.get(m["part"], kind.handle.get(None))
    handle = values[1:4] + rot @ np.asarray(offset if offset else (0.0, 0.0, 0.0))
    return Part(joint, kind, float(values[0]), values[1:4], rot, handle)


def part_state(joint: str, scene: dict[str, Any]) -> str | None:
    """Which of open/close/turnon/turnoff the part shows, if any."""
    p = part(joint, scene)
    if p is None:
        return None
    return next((name for name, (lo, hi) in p.kind.states.items() if lo < p.q < hi), None)


def side_entry(region: str, scene: dict[str, Any]) -> np.ndarray | None:
    """The horizontal unit vector out of the opening a region is entered through, if the
    region is entered from the side (inside a microwave, a shelf's layer)."""
    m = re.match(r"^(?P<fixture>.+?_\d+)_", region)
    pose = scene.get("fixture_poses", {}).get(m["fixture"]) if m else None
    way = SIDE_ENTRY.get(re.sub(r"_\d+$", "", m["fixture"])) if m else None
    if pose is None or way is None:
        return None
    out = quat_to_matrix(np.asarray(pose[3:7], dtype=np.float64)) @ np.array([*way, 0.0])
    return out[:2] / np.linalg.norm(out[:2])
