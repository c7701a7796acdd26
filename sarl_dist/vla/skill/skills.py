"""One skill per predicate: where the hand goes next, computed from the observation alone.

Every skill is stateless like a VLA: its phase is read off the scene (where the hand is,
what it holds, where the object or the fixture part is), so it works under replanning,
after another skill and after a reset. A skill answers a `Motion`: a position target for
the end effector, a hand yaw (about the world z axis; None keeps the current one), a
gripper command and the phase's name (returned to the client as `skill_phase`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sarl_dist.geometry import hand_down, hand_yaw, lean, orientation_error, quat_to_matrix
from sarl_dist.libero_objects import shape
from sarl_dist.vla.skill.fixtures import Part, part, part_of, side_entry
from sarl_dist.vla.skill.goal import Predicate, position

OPEN_WIDTH = 0.079  # finger gap of the fully open Panda gripper (measured 0.080)
EMPTY = 0.0025  # finger gap below which the hand holds nothing (closed on air: 0.0012)
TIP_DROP = 0.012  # the fingertips sit this far below robot0_eef_pos (measured)
SHOULDER = 0.333  # the Panda's shoulder joint above its base
WRIST = 0.21  # its wrist above the end effector of a hand pointing down
REACH = 0.74  # shoulder to wrist from which the arm nears full stretch (0.80 stalls OSC)
FOLD = 0.40  # shoulder to wrist below which the elbow nears its limit (0.37 stalls there)
NEAR_SIDE = 0.6  # a round rim this far from the robot is best pinched on its near side
PRESHAPE = 0.045  # finger gap for pinching a handle bar between fingers above and below it
PUSH_TILT = 0.5  # fingers tipped toward what they push, the wrist kept back (rad)
WRIST_HOME = np.pi / 4  # the Panda's last joint at robosuite's home pose (hand yaw 0)
WRIST_MAX = 2.85  # that joint's range is +-2.8973 rad; the hand stalls against it


@dataclass(frozen=True)
class Hand:
    """The gripper as the observation shows it."""

    pos: np.ndarray
    quat: np.ndarray  # x, y, z, w
    width: float  # finger gap
    speed: float  # fastest finger joint speed

    @property
    def closed(self) -> bool:
        return self.width < OPEN_WIDTH - 0.005

    @property
    def settled(self) -> bool:
        return self.speed < 0.02

    @property
    def gripping(self) -> bool:
        """Closed on something: the fingers stopped apart."""
        return self.closed and self.width > EMPTY and self.settled

    @property
    def yaw(self) -> float:
        return hand_yaw(self.quat)


@dataclass(frozen=True)
class Motion:
    target: np.ndarray
    grip: float  # -1 open, +1 close
    phase: str
    yaw: float | None = None
    tilt: float = 0.0  # fingers tipped toward the hand's -x (see geometry.hand_down)
    roll: float = 0.0  # then turned about their own axis
    width: float | None = None  # a finger gap to shape and hold instead of `grip`
    lean: tuple[float, float] = (0.0, 0.0)  # the whole hand tipped toward this, by its length
    flip: bool = True  # False: this yaw exactly, not the half turn equivalent to it

    def orientation(self, hand: Hand) -> np.ndarray:
        """The hand's target rotation: of the two the symmetric gripper makes equivalent
        (turned half a turn about its own axis), the one nearer to where it is that the
        wrist can turn to without passing its joint limit."""
        yaw = hand.yaw if self.yaw is None else self.yaw
        options = sorted(
            [(yaw, self.tilt), (yaw + np.pi, -self.tilt)][: 2 if self.flip else 1],
            key=lambda o: np.linalg.norm(orientation_error(self._rotation(*o), hand.quat)),
        )
        now = wrist_angle(hand.yaw)
        turnable = [
            o
            for o in options
            if abs(now - wrap(self._facing(*o) - hand.yaw, 2 * np.pi)) < WRIST_MAX
        ]
        return self._rotation(*(turnable or options)[0])

    def _facing(self, yaw: float, tilt: float) -> float:
        """The yaw of the hand's x axis in this pose: `yaw` itself unless rolled. A rolled
        pose's half turn twin faces the other way, and the wrist turns by the change in
        facing (a drawer's pinch from a hand left at yaw -1.8 drove it into its stop)."""
        return hand_yaw(hand_down(yaw, tilt, self.roll))

    def _rotation(self, yaw: float, tilt: float) -> np.ndarray:
        return lean(hand_down(yaw, tilt, self.roll), np.asarray(self.lean))


def wrist_angle(yaw: float) -> float:
    """The Panda's last joint for a downward hand of this yaw: WRIST_HOME at yaw 0, the
    joint turning against the hand (measured); of two angles a turn apart, the one in
    range (the joint spans 5.8 rad of the turn)."""
    q = WRIST_HOME - yaw
    return q - 2 * np.pi if q > WRIST_MAX and q - 2 * np.pi > -WRIST_MAX else q


def wrap(angle: float, period: float = np.pi) -> float:
    """An angle folded into [-period/2, period/2)."""
    return (angle + period / 2) % period - period / 2


def object_yaw(pose: np.ndarray) -> float:
    x, y, z, w = np.asarray(pose[3:7], dtype=np.float64)
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def hold(hand: Hand, phase: str = "idle") -> Motion:
    """Keep still, the gripper as it is."""
    return Motion(hand.pos.copy(), 1.0 if hand.closed else -1.0, phase)


def retreat(hand: Hand, height: float) -> Motion:
    """Let go and rise: what a finished skill does. The fingers open before the hand
    rises: rising while they still close on a mug's wall dragged the mug over."""
    if hand.closed:
        return Motion(hand.pos.copy(), -1.0, "release")
    return Motion(np.array([hand.pos[0], hand.pos[1], max(hand.pos[2], height)]), -1.0, "done")


def reach_lean(point: np.ndarray, scene: dict[str, Any], near: bool = False) -> tuple[float, float]:
    """Tip the hand where `point` is near the edge of the arm's reach.

    A stretched arm is singular: OSC stalls there, or swings up when asked to pull back.
    Fingers tipped away from the robot keep the wrist back and the elbow bent. `near`:
    close to the base the elbow folds to its limit before the hand is down (libero_goal's
    stove dial), and fingers tipped toward the robot keep the wrist out. Not for carried
    objects: a book held by its top edge then swings (the caddy's back compartment).
    """
    base = np.asarray(scene.get("base", point), dtype=np.float64)
    away = (point - base)[:2]
    if np.linalg.norm(away) < 1e-6:
        return (0.0, 0.0)
    away = away / np.linalg.norm(away)
    shoulder = base + np.array([0.0, 0.0, SHOULDER])

    def wrist(angle: float) -> float:  # shoulder to wrist, the fingers tipped by `angle`
        tip = np.array([-np.sin(angle) * away[0], -np.sin(angle) * away[1], np.cos(angle)])
        return float(np.linalg.norm(point + WRIST * tip - shoulder))

    if near and wrist(0.0) < FOLD:
        angle = next((-a for a in (0.2, 0.35, 0.5) if wrist(-a) >= FOLD), -0.5)
    else:
        angle = next((a for a in (0.0, 0.2, 0.35, 0.5) if wrist(a) < REACH), 0.5)
    return (angle * away[0], angle * away[1])


# ---------------------------------------------------------------- grasps
# The hand's footprint, sampled: along its closing axis and across it (m).
_FOOTPRINT = np.array([(a, b) for a in (-0.1, -0.05, 0, 0.05, 0.1) for b in (-0.032, 0.0, 0.032)])


@dataclass(frozen=True)
class Grasp:
    point: np.ndarray  # where the end effector is when the fingers close
    yaw: float  # the hand's yaw: the fingers close along (-sin yaw, cos yaw)


def grasp(key: str, scene: dict[str, Any], hand: Hand, side: bool = False) -> Grasp:
    """How to take hold of an object, from its pose and its family's grasp.

    Where the family leaves a choice (the side of a round rim, the spot along a handle):
    the one the closed hand is at (holding it, or closing on it); else the first, in the
    family's order of preference, where the hand stands clear of fixture parts and taller
    objects, else the clearest. `side`: to put it in through an opening (by its handle).
    """
    options = _grasp_options(key, scene, side)
    if len(options) == 1:
        return options[0]
    if hand.closed:
        nearest = min(options, key=lambda g: np.linalg.norm(g.point - hand.pos))
        if np.linalg.norm((nearest.point - hand.pos)[:2]) < 0.03:
            return nearest
    best, best_clear = options[0], -np.inf
    for option in options:
        clear = _clearance(option, key, scene)
        if clear > 0.03:
            return option
        if clear > best_clear:
            best, best_clear = option, clear
    return best


def _grasp_options(key: str, scene: dict[str, Any], side: bool = False) -> list[Grasp]:
    """The family's ways to hold the object, most preferred first."""
    s, pose = shape(key), np.asarray(scene["objects"][key], dtype=np.float64)
    own = object_yaw(pose)
    c, si = np.cos(own), np.sin(own)
    if side and s.side is not None:  # by the handle, the fingers across the object's y axis;
        # where the handle is follows the object however it tilts (it hangs from the hand)
        return [Grasp(pose[:3] + quat_to_matrix(pose[3:7]) @ np.asarray(s.side), own)]
    lift = np.array([0.0, 0.0, s.grasp])
    if s.radial:  # round rim: pinched across its wall, the hand along the line through it;
        # first the side facing the robot when far from it (the arm stays bent), else away
        base = np.asarray(scene.get("base", (0.0, 0.0, 0.0)), dtype=np.float64)
        away = pose[:2] - base[:2]
        facing = -away if np.linalg.norm(away) > NEAR_SIDE else away
        start = float(np.arctan2(facing[1], facing[0]))
        angles = [start + k * np.pi / 4 for k in (0, 1, -1, 2, -2, 3, -3, 4)]
        return [
            Grasp(
                pose[:3] + s.wall * np.array([np.cos(a), np.sin(a), 0.0]) + lift,
                float(np.arctan2(-np.cos(a), np.sin(a))),
            )
            for a in angles
        ]
    yaw = 0.0 if s.yaw is None else wrap(own + s.yaw)
    closing = np.array([-np.sin(yaw), np.cos(yaw), 0.0])  # the fingers' closing axis
    handle = np.array([c * s.handle[0] - si * s.handle[1], si * s.handle[0] + c * s.handle[1], 0])
    spots = (1.0, 1.2, 0.8) if s.handle != (0.0, 0.0) else (0.0,)
    return [Grasp(pose[:3] + s.wall * closing + k * handle + lift, yaw) for k in spots]


def _clearance(
    option: Grasp, key: str, scene: dict[str, Any], inside: np.ndarray | None = None
) -> float:
    """How far the hand's footprint there (20 x 6.3 cm, long along the closing axis, from
    3 to 12 cm above the grasp point) stays from every fixture part and object but `key`
    (and but the fixture part holding the point `inside`: the drawer it puts things in)."""
    along = np.array([-np.sin(option.yaw), np.cos(option.yaw)])
    across = np.array([-along[1], along[0]])
    bottom, top = option.point[2] + 0.03, option.point[2] + 0.12
    points = option.point[:2] + _FOOTPRINT[:, :1] * along + _FOOTPRINT[:, 1:] * across
    clear = np.inf
    for box in scene.get("fixtures", {}).values():
        if inside is not None and np.all((box[:3] < inside) & (inside < box[3:])):
            continue
        if box[5] > bottom and box[2] < top:
            gap = np.maximum(np.maximum(box[:2] - points, points - box[3:5]), 0.0)
            clear = min(clear, float(np.linalg.norm(gap, axis=1).min()))
    for other, pose in scene["objects"].items():
        if other != key and pose[2] + shape(other).top > bottom:
            gaps = np.linalg.norm(points - np.asarray(pose[:2]), axis=1) - 0.04
            clear = min(clear, float(gaps.min()))
    return clear


def held_object(hand: Hand, scene: dict[str, Any]) -> str | None:
    """The object between the fingers, if the hand grips one at its grasp point."""
    if not hand.gripping:
        return None
    near = {
        k: min(np.linalg.norm(grasp(k, scene, hand, side).point - hand.pos) for side in (0, 1))
        for k in scene["objects"]
    }
    key = min(near, key=near.get, default=None)
    return key if key is not None and near[key] < 0.05 else None


# ---------------------------------------------------------------- In / On: carry it there
@dataclass(frozen=True)
class Drop:
    """Where a carried object goes: over `point`, released with its origin at `release`,
    carried with its origin at `clear` (over the destination's rim)."""

    point: np.ndarray
    release: float
    clear: float


def drop_zone(pred: Predicate, scene: dict[str, Any], reach: np.ndarray) -> Drop:
    """`reach`: where the hand holds the object, from the object's origin."""
    s = shape(pred.moved)
    if pred.target in scene["sites"]:
        half = np.asarray(scene["site_extents"][pred.target], dtype=np.float64)
        centre, under = _free_spot(pred, half, scene, reach)
        top = centre[2] + half[2]
        if pred.name == "in":  # into a container: low, but the hand stays above its rim;
            # where nothing leaves it room, above what is there (it settles against them)
            release = max(centre[2] - half[2] + s.bottom + 0.02, top - s.grasp - 0.03)
            release = max(release, under + s.bottom + 0.01)
        else:
            release = _surface(centre, top, scene) + s.bottom + 0.015
    else:
        centre = np.asarray(scene["objects"][pred.target][:3], dtype=np.float64)
        top = centre[2] + shape(pred.target).top
        release = top + s.bottom + 0.01
    own = object_yaw(scene["objects"][pred.moved])
    c, si = np.cos(own), np.sin(own)
    middle = np.array([c * s.middle[0] - si * s.middle[1], si * s.middle[0] + c * s.middle[1], 0.0])
    clear = _tops_near(centre, pred.moved, scene, top) + s.bottom + 0.05
    return Drop(centre - middle, release, clear)  # its footprint's centre over the point


ON_MARGIN = 0.02  # an object set on a region keeps its centre this far inside the region
FINGERS = 0.045  # how far the fingers closed on a handle reach out from the grasp point


def _free_spot(
    pred: Predicate, half: np.ndarray, scene: dict[str, Any], reach: np.ndarray
) -> tuple[np.ndarray, float]:
    """Where in a region to put the object, and the highest top its footprint overlaps
    there (-inf: none). Into a container: its middle; onto a surface: its side nearest the
    object, leaving room behind. When something is in the way there (the first moka pot on
    the stove, the first can in the basket, the handles of the drawers above an open one):
    the spot clearest of it, for the object and for the hand holding it by a handle, among
    those that keep the object in the region: its whole footprint inside a container's
    walls, its centre inside a surface's."""
    centre = np.asarray(scene["sites"][pred.target], dtype=np.float64)
    radius = shape(pred.moved).radius
    room = np.maximum(half[:2] - (radius if pred.name == "in" else ON_MARGIN), 0.0)
    others, walls = _occupants(pred, centre, half, scene)
    handle = reach[:2] if np.linalg.norm(reach[:2]) > 0.03 else None

    def gaps(p: np.ndarray) -> list[float]:
        return [np.hypot(p[0] - x, p[1] - y) - radius - r - 0.01 for x, y, r, _ in others]

    def clearance(p: np.ndarray) -> float:
        fingers = (
            [] if handle is None else [np.hypot(*(p[:2] + handle - o[:2])) - o[2] for o in others]
        )
        return min(
            gaps(p)
            + [gap - FINGERS for gap in fingers]
            + [
                np.linalg.norm(np.maximum(np.maximum(box[:2] - p[:2], p[:2] - box[3:5]), 0.0))
                - radius
                for box in walls
            ],
            default=np.inf,
        )

    now = np.asarray(scene["objects"][pred.moved][:2], dtype=np.float64)
    spot = centre.copy()
    if pred.name == "on":  # the nearest spot stays put while the object comes to it
        spot[:2] += np.clip(now - centre[:2], -room, room)
    if clearance(spot) <= 0.01:  # of the clearest spots, the one nearest the object now:
        # it stays the same while the object comes to it and what is there shifts a little
        steps = np.linspace(-1.0, 1.0, 9)
        spots = [centre + np.array([a * room[0], b * room[1], 0.0]) for a in steps for b in steps]
        clear = [clearance(p) for p in spots]
        spot = min(
            (p for p, c in zip(spots, clear, strict=True) if c >= max(clear) - 0.01),
            key=lambda p: np.linalg.norm(p[:2] - now),
        )
    under = [o[3] for o, gap in zip(others, gaps(spot), strict=True) if gap < -0.01]
    return spot, max(under, default=-np.inf)


def _occupants(
    pred: Predicate, centre: np.ndarray, half: np.ndarray, scene: dict[str, Any]
) -> tuple[list[tuple[float, float, float, float]], list[np.ndarray]]:
    """What a region holds: (x, y, radius, top) of the objects in or at it, and the
    fixture parts above its floor (not the one holding the region)."""
    reach = half[:2] + shape(pred.moved).radius
    others = [
        (*np.asarray(p[:2], dtype=np.float64), shape(k).radius, float(p[2]) + shape(k).top)
        for k, p in scene["objects"].items()
        if k != pred.moved
        and not pred.target.startswith(k + "_")  # the basket its region belongs to
        and np.all(np.abs(p[:2] - centre[:2]) < reach + shape(k).radius)
    ]
    walls = [
        box
        for box in scene.get("fixtures", {}).values()
        if box[5] > centre[2] - half[2] + 0.01
        and not np.all((box[:3] < centre) & (centre < box[3:]))
    ]
    return others, walls


def _surface(point: np.ndarray, top: float, scene: dict[str, Any]) -> float:
    """The height a region's objects stand on: the top of the fixture part under `point`
    when it is a little above the region's own top (a stove's burner plate), else that."""
    return max(
        [top]
        + [
            float(box[5])
            for box in scene.get("fixtures", {}).values()
            if np.all(box[:2] < point[:2])
            and np.all(point[:2] < box[3:5])
            and top - 0.01 < box[5] < top + 0.04
        ]
    )


def _tops_near(point: np.ndarray, moved: str, scene: dict[str, Any], top: float) -> float:
    """The highest top a carried object must clear on its way to `point`: the fixture it
    stands in (a caddy's walls) and the objects within 0.2 m."""
    for box in scene.get("fixtures", {}).values():
        if np.all(point[:2] > box[:2] - 0.03) and np.all(point[:2] < box[3:5] + 0.03):
            top = max(top, float(box[5]))
    for key, pose in scene["objects"].items():
        if key != moved and np.linalg.norm(np.asarray(pose[:2]) - point[:2]) < 0.2:
            top = max(top, float(pose[2]) + shape(key).top)
    return top


def _walls_around(point: np.ndarray, scene: dict[str, Any]) -> float:
    """The top of the fixture part `point` stands in (an open drawer), else -inf: what is
    taken out of it rises over its walls before it moves away (carried sideways, a bowl
    in the top drawer caught on the drawer's front). Not parts entered from the side (a
    shelf's layer, the microwave): those are left the way they were entered."""
    tops = [
        float(box[5])
        for name, box in scene.get("fixtures", {}).items()
        if side_entry(name, scene) is None
        and np.all(box[:2] < point[:2])
        and np.all(point[:2] < box[3:5])
        and box[2] - 0.01 < point[2] < box[5]
    ]
    return max(tops, default=-np.inf)


def _part_top(hand: Hand, scene: dict[str, Any]) -> float:
    """Just above the fixture part the hand is beside (a drawer it just let go of), so it
    leaves upward instead of dragging along it."""
    beside = [
        box[5] + 0.05
        for box in scene.get("fixtures", {}).values()
        if np.all(hand.pos[:2] > box[:2] - 0.05)
        and np.all(hand.pos[:2] < box[3:5] + 0.05)
        and box[2] - 0.05 < hand.pos[2] < box[5] + 0.05
    ]
    return max(beside, default=-np.inf)


def carry(pred: Predicate, hand: Hand, scene: dict[str, Any]) -> Motion:
    """Pick the object up and put it in/on the target, or lift it ("pick up the X").

    Far from the object: travel high; above it: align, descend, close and wait for the
    fingers to stop; holding it: lift, carry the object (not the fingers) over the
    destination, turn it to fit, lower, release. Near the edge of the arm's reach the
    hand leans away from the robot.
    """
    motion = _carry(pred, hand, scene)
    return replace(motion, lean=reach_lean(motion.target, scene))


def _carry(pred: Predicate, hand: Hand, scene: dict[str, Any]) -> Motion:
    key = pred.moved
    obj = np.asarray(scene["objects"][key][:3], dtype=np.float64)
    entry = side_entry(pred.target, scene) if pred.name == "in" else None
    hold_at = grasp(key, scene, hand, side=entry is not None)
    at, yaw = hold_at.point, hold_at.yaw
    xy_to_obj = np.linalg.norm((at - hand.pos)[:2])
    near = xy_to_obj < 0.03 and abs(hand.pos[2] - at[2]) < 0.04
    holding = hand.closed and hand.width > EMPTY and np.linalg.norm(at - hand.pos) < 0.06
    if hand.closed and not hand.settled and near:  # still closing on it: keep still
        return Motion(hand.pos.copy(), 1.0, "grasp", yaw)
    if not holding:
        if hand.closed and not near:  # holding something else, or nothing: let go in place
            return Motion(hand.pos.copy(), -1.0, "release")
        travel_z = max(at[2] + 0.15, obj[2] + shape(key).top + 0.1, _part_top(hand, scene))
        if xy_to_obj > 0.05:  # far: travel high, so nothing on the way is swept along
            if hand.pos[2] < travel_z - 0.03:
                return Motion(np.array([*hand.pos[:2], travel_z]), -1.0, "rise", yaw)
            return Motion(np.array([*at[:2], travel_z]), -1.0, "approach", yaw)
        if xy_to_obj > (0.025 if hand.pos[2] < at[2] + 0.06 else 0.02):
            hover = np.clip(hand.pos[2], at[2] + 0.06, travel_z)
            return Motion(np.array([*at[:2], hover]), -1.0, "align", yaw)
        if hand.pos[2] > at[2] + 0.012:
            return Motion(at, -1.0, "descend", yaw)
        if hand.closed:  # settled at the grasp point on nothing (a rim missed): open, and
            return Motion(hand.pos.copy(), -1.0, "release", yaw)  # come down again
        return Motion(hand.pos.copy(), 1.0, "grasp", yaw)
    if pred.name == "lift":
        return Motion(np.array([*hand.pos[:2], obj[2] + 0.2]), 1.0, "lift")
    if entry is not None:
        return _insert(pred, hand, obj, entry, scene)
    offset = hand.pos - obj  # carry the object, not the fingers, over the destination
    drop = drop_zone(pred, scene, offset)
    carry_z = drop.clear + offset[2]
    rim = shape(key).radial or shape(key).wall != 0.0  # held by its wall: turns about it
    turn = clear_turn(drop, hand, obj, key, scene) if rim else fit_turn(pred, scene)
    xy_to_dest = np.linalg.norm((obj - drop.point)[:2])
    over = np.array([drop.point[0] + offset[0], drop.point[1] + offset[1]])
    if xy_to_dest > 0.05:  # far: carry it over, never lower on the way (a stretched arm cannot)
        walls = _walls_around(obj, scene) + shape(key).bottom  # out of a drawer: up first
        if hand.pos[2] < carry_z - 0.06 or obj[2] < walls + 0.01:
            return Motion(
                np.array([*hand.pos[:2], max(carry_z, walls + 0.03 + offset[2])]), 1.0, "lift"
            )
        return Motion(np.array([*over, max(carry_z, hand.pos[2])]), 1.0, "carry", hand.yaw + turn)
    if abs(turn) > 0.1 and hand.pos[2] > carry_z - 0.03:  # turn it to fit, then lower it in
        return Motion(np.array([*over, max(carry_z, hand.pos[2])]), 1.0, "turn", hand.yaw + turn)
    release_z = drop.release + offset[2]
    if hand.pos[2] > release_z + 0.01:  # lower it, correcting the rest on the way
        return Motion(np.array([*over, release_z]), 1.0, "lower", hand.yaw + turn)
    if xy_to_dest > 0.025:  # down, but off: correct before letting go
        return Motion(np.array([*over, hand.pos[2]]), 1.0, "lower", hand.yaw + turn)
    return Motion(hand.pos.copy(), -1.0, "release")


PUSH_LOW = 0.008  # fingertips this far above the pushed object's resting face
PUSH_AHEAD = 0.03  # how far ahead of the hand a push aims: slow enough to stop on the spot


def push(pred: Predicate, hand: Hand, scene: dict[str, Any]) -> Motion:
    """Slide the object over the table into the region ("push the plate to the front of
    the stove"), the hand low, moving along the line from the object to the region's
    centre. An object with a rim the open fingers fit in (a plate, a basket, a tray) is
    taken from inside, the fingers spread across the way and dragging it by its far rim:
    the hand then needs no room behind it (libero_goal's plate stands in front of the
    cabinet's drawers). Anything else is pushed from behind with a fist. The line is drawn
    from where the object is now, so one that turns or drifts is pushed on from its new
    side; a hand that has fallen off the line rises, goes round and comes down again.
    """
    motion = _push(pred, hand, scene)
    return replace(motion, lean=reach_lean(motion.target, scene))


def _push(pred: Predicate, hand: Hand, scene: dict[str, Any]) -> Motion:
    s = shape(pred.moved)
    obj = position(pred.moved, scene)
    way = position(pred.target, scene)[:2] - obj[:2]
    distance = float(np.linalg.norm(way))
    d = way / max(distance, 1e-9)
    yaw = float(np.arctan2(d[1], d[0]))  # the fingers' closing axis across the way
    low_z = obj[2] - s.bottom + PUSH_LOW + TIP_DROP
    rel = hand.pos[:2] - obj[:2]
    behind = -float(np.dot(rel, d))  # how far behind the object's centre the hand is
    lateral = float(np.linalg.norm(rel + behind * d))
    rim = abs(s.wall) > OPEN_WIDTH / 2 + 0.01  # a rim wide enough to take the open fingers
    if rim:  # from its middle to its far wall
        start, engaged, grip = obj[:2], -abs(s.wall) < behind < s.radius / 2, -1.0
    else:  # a fist at its back, where two spread fingers could let a small box through
        start, grip = obj[:2] - (s.radius + 0.02) * d, 1.0
        engaged = s.radius / 2 < behind < s.radius + 0.06
    if rim and hand.closed:  # a fist would slip off the rim: open first, above the table
        return Motion(np.array([*hand.pos[:2], max(hand.pos[2], low_z + 0.02)]), -1.0, "release")
    if hand.pos[2] < low_z + 0.02 and lateral < 0.03 and engaged:
        step = min(PUSH_AHEAD, distance)
        on_line = obj[:2] - behind * d  # back onto the line while moving along it
        return Motion(np.array([*(on_line + step * d), low_z]), grip, "push", yaw)
    safe_z = max(obj[2] + s.top + 0.08, _part_top(hand, scene))
    if np.linalg.norm(hand.pos[:2] - start) > 0.02:
        if hand.pos[2] < safe_z - 0.03 and np.linalg.norm(rel) < s.radius + 0.1:
            return Motion(np.array([*hand.pos[:2], safe_z]), grip, "rise", yaw)
        height = max(safe_z, min(hand.pos[2], safe_z + 0.1))
        return Motion(np.array([*start, height]), grip, "approach", yaw)
    return Motion(np.array([*start, low_z]), grip, "descend", yaw)


def _insert(
    pred: Predicate, hand: Hand, obj: np.ndarray, out: np.ndarray, scene: dict[str, Any]
) -> Motion:
    """Slide a held object into a region through its opening (`out` points out of it).

    The object is turned so the hand is on its outer side, carried to a point in front
    of the opening, lowered to just above the region's floor and pushed in as deep as
    the hand can follow while staying outside (a microwave's top, a shelf's board).
    """
    s = shape(pred.moved)
    centre = np.asarray(scene["sites"][pred.target], dtype=np.float64)
    half = np.asarray(scene["site_extents"][pred.target], dtype=np.float64)
    depth = float(abs(out[0]) * half[0] + abs(out[1]) * half[1])  # centre to opening
    offset = hand.pos - obj
    behind = float(np.dot(offset[:2], out))  # how far outside the object the hand is
    turn = wrap(float(np.arctan2(out[1], out[0]) - np.arctan2(offset[1], offset[0])), 2 * np.pi)
    floor_z = centre[2] - half[2] + s.bottom + 0.03 + offset[2]  # above its front edge
    along = float(np.dot(obj[:2] - centre[:2], out))
    lateral = obj[:2] - centre[:2] - along * out
    deepest = max(0.0, depth + 0.035 - behind)  # the hand 3.5 cm outside the opening
    if along > depth + s.radius - 0.01:  # still outside: to the opening, turned, lowered
        ahead = centre[:2] + (depth + s.radius + 0.04) * out + offset[:2]
        clear = _tops_near(centre, pred.moved, scene, centre[2] + half[2]) + s.bottom + 0.05
        off = hand.pos[:2] - ahead
        outward = float(np.dot(off, out))  # > 0: farther out than the point in front
        # back to that point only when off the line or short of it: a hand already on its
        # way in keeps going (a held mug that lags behind it is not pulled out again)
        if np.linalg.norm(off - outward * out) > 0.03 or outward > 0.03 or abs(turn) > 0.15:
            height = max(clear + offset[2], hand.pos[2])
            return Motion(np.array([*ahead, height]), 1.0, "carry", hand.yaw + turn)
        if hand.pos[2] > floor_z + 0.01:
            return Motion(np.array([*ahead, floor_z]), 1.0, "lower", hand.yaw + turn)
    if along > min(deepest + 0.025, depth - 0.005) or np.linalg.norm(lateral) > 0.02:
        inside = centre[:2] + deepest * out + offset[:2]
        return Motion(np.array([*inside, floor_z]), 1.0, "insert", hand.yaw + turn)
    return Motion(hand.pos.copy(), -1.0, "release")


def clear_turn(drop: Drop, hand: Hand, obj: np.ndarray, key: str, scene: dict[str, Any]) -> float:
    """Hand rotation, for an object held by its wall or rim (a bowl, a mug), that leaves
    the hand clear of what stands around the destination when it lets go (not over a
    cabinet's face, not against the caddy a mug is set beside)."""
    offset = (hand.pos - obj)[:2]
    for turn in (0.0, np.pi / 4, -np.pi / 4, np.pi / 2, -np.pi / 2, 0.75 * np.pi, -0.75 * np.pi):
        c, s = np.cos(turn), np.sin(turn)
        at = drop.point[:2] + np.array(
            [c * offset[0] - s * offset[1], s * offset[0] + c * offset[1]]
        )
        height = drop.release + hand.pos[2] - obj[2]
        option = Grasp(np.array([*at, height]), hand.yaw + turn)
        if _clearance(option, key, scene, inside=drop.point) > 0.03:
            return turn
    return 0.0


def fit_turn(pred: Predicate, scene: dict[str, Any]) -> float:
    """Hand rotation that lines a held, yaw-grasped object up with a narrow region.

    A book goes into a caddy compartment only with its thin side across the
    compartment's narrow side; the object turns with the hand that holds it.
    """
    extents = scene.get("site_extents", {})
    if pred.target not in extents or shape(pred.moved).yaw is None:
        return 0.0
    half = extents[pred.target]
    if abs(half[0] - half[1]) < 0.01:  # a square region: any yaw fits
        return 0.0
    want = 0.0 if half[0] < half[1] else np.pi / 2  # the object's thin axis along the narrow side
    return wrap(want - object_yaw(scene["objects"][pred.moved]))


# ---------------------------------------------------------------- Turnon / Turnoff: the dial
def turn_knob(pred: Predicate, hand: Hand, scene: dict[str, Any]) -> Motion:
    """Pinch the dial's grip ridge and turn the hand about the dial's axis.

    The fingers close across the ridge (it lies along the dial's y axis); holding it, the
    hand's yaw is driven a little past the ridge's, in the direction that turns the
    dial on (counter-clockwise from above) or off, until LIBERO's threshold is passed.
    Of the two equivalent ways to pinch the ridge, the one that leaves the wrist most room
    to turn that way: near its joint limit, the hand holding the dial turned back. A dial
    close to the robot's base is reached with the fingers tipped toward the robot.
    """
    motion = _turn_knob(pred, hand, scene)
    return replace(motion, lean=reach_lean(motion.target, scene, near=True))


def _turn_knob(pred: Predicate, hand: Hand, scene: dict[str, Any]) -> Motion:
    knob = part(part_of(pred.target, scene), scene)
    ridge = float(np.arctan2(knob.rot[1, 1], knob.rot[0, 1]))  # the part's y axis, in world
    sign = 1.0 if pred.name == "turnon" else -1.0

    def room(yaw: float) -> float:  # the hand turning by +yaw turns the wrist by -yaw
        q = wrist_angle(wrap(yaw, 2 * np.pi))
        return WRIST_MAX + sign * q if abs(q) <= WRIST_MAX else -np.inf

    grip_yaw = max((wrap(ridge), wrap(ridge) + np.pi), key=room)
    safe_z = knob.handle[2] + 0.12
    close_to = np.linalg.norm((knob.handle - hand.pos)[:2]) < 0.012
    low = hand.pos[2] < knob.handle[2] + 0.03
    if hand.closed and low and close_to:
        if not hand.settled:
            return Motion(hand.pos.copy(), 1.0, "pinch")
        return Motion(knob.handle.copy(), 1.0, "turn", hand.yaw + sign * 0.5, flip=False)
    if hand.closed:
        return Motion(np.array([*hand.pos[:2], max(hand.pos[2], safe_z)]), -1.0, "release")
    aligned = abs(wrap(hand.yaw - grip_yaw, 2 * np.pi)) < 0.1
    if not close_to or not aligned:
        height = safe_z if not close_to else max(hand.pos[2], knob.handle[2] + 0.04)
        return Motion(np.array([*knob.handle[:2], height]), -1.0, "approach", grip_yaw, flip=False)
    if hand.pos[2] > knob.handle[2] + 0.005:
        return Motion(knob.handle.copy(), -1.0, "descend", grip_yaw, flip=False)
    return Motion(hand.pos.copy(), 1.0, "pinch", grip_yaw, flip=False)


# ---------------------------------------------------------------- Open / Close
def articulate(pred: Predicate, hand: Hand, scene: dict[str, Any]) -> Motion:
    p = part(part_of(pred.target, scene), scene)
    if held_object(hand, scene) is not None:
        return Motion(hand.pos.copy(), -1.0, "release")  # put down what it holds first
    if p.kind.motion == "slide":
        return slide_drawer(p, pred.name == "open", hand)
    return swing_door(p, pred.name == "open", hand)


def slide_drawer(p: Part, opening: bool, hand: Hand) -> Motion:
    """Grip the drawer's handle bar from above and pull it out, or push the drawer in.

    The drawer slides along its part's y axis (q < 0: out). Opening pinches the bar
    across its thickness and pulls; closing pushes the front with closed fingers, aiming
    a little past the closed position, which LIBERO only counts from q > 0.
    """
    out = -p.local((0.0, 1.0, 0.0))  # the direction the drawer opens
    across = float(np.arctan2(out[1], out[0]))  # fingers close along `out`: hand x across it
    yaw = wrap(across - np.pi / 2)
    bar = p.handle
    safe_z = bar[2] + 0.1
    if not opening:  # the thin side of the hand toward the cabinet, the fingers tipped in,
        # so neither the hand nor the forearm meets the cabinet before the drawer is shut
        yaw, tilt = wrap(across), PUSH_TILT
        front = bar + 0.01 * out
        push_to = bar + (p.q - 0.012) * out  # where the bar is once the drawer is shut
        behind = float(np.dot(hand.pos - front, out))  # > 0: the hand is in front of it
        lined_up = np.linalg.norm((hand.pos - front) - behind * out) < 0.03
        if not hand.closed:  # a fist to push with, made clear of what it last let go of
            if hand.pos[2] < safe_z - 0.03:
                return Motion(np.array([*hand.pos[:2], safe_z]), -1.0, "rise", yaw, tilt)
            return Motion(hand.pos.copy(), 1.0, "close", yaw, tilt)
        if lined_up and abs(hand.pos[2] - bar[2]) < 0.02 and behind > -0.02:
            return Motion(np.array([*push_to[:2], bar[2]]), 1.0, "push", yaw, tilt)
        start = front + 0.04 * out
        if np.linalg.norm((start - hand.pos)[:2]) < 0.015:
            return Motion(np.array([*start[:2], bar[2]]), 1.0, "descend", yaw, tilt)
        if hand.pos[2] < safe_z - 0.03 and np.linalg.norm((start - hand.pos)[:2]) > 0.03:
            return Motion(np.array([*hand.pos[:2], safe_z]), 1.0, "rise", yaw, tilt)
        return Motion(np.array([*start[:2], safe_z]), 1.0, "approach", yaw, tilt)
    # opening: pinch the bar between fingers pointing at the drawer, one above, one below,
    # the gripper half open so the upper finger passes under the next drawer's bar
    yaw, tilt, roll = across, np.pi / 2, np.pi / 2
    grip = bar + 0.004 * out
    front = grip + 0.12 * out
    pose = Motion(hand.pos, 0.0, "", yaw, tilt, roll).orientation(hand)
    turned = np.linalg.norm(orientation_error(pose, hand.quat)) < 0.15
    along = float(np.dot(hand.pos - grip, out))  # how far in front of the bar the hand is
    off_line = np.linalg.norm((hand.pos - grip) - along * out)
    at_bar = along < 0.03 and off_line < 0.02
    if at_bar and hand.width < PRESHAPE - 0.015:  # closing or closed on the bar
        if hand.gripping and hand.width > 0.008:
            return Motion(hand.pos + 0.08 * out, 1.0, "pull", yaw, tilt, roll)
        if not hand.settled:
            return Motion(hand.pos.copy(), 1.0, "pinch", yaw, tilt, roll)
    if hand.width < PRESHAPE - 0.015:  # closed on nothing: open again, backing out
        return Motion(hand.pos + 0.05 * out, -1.0, "release", yaw, tilt, roll)
    if turned and off_line < 0.015 and -0.03 < along < 0.14:
        if along > 0.006:
            return Motion(grip, 0.0, "reach", yaw, tilt, roll, PRESHAPE)
        return Motion(hand.pos.copy(), 1.0, "pinch", yaw, tilt, roll)
    if along < 0.14 and off_line < 0.05:  # in front of the drawer, off the bar: back out
        return Motion(front, 0.0, "back", yaw, tilt, roll, PRESHAPE)
    if np.linalg.norm((front - hand.pos)[:2]) > 0.03 and hand.pos[2] < safe_z - 0.03:
        return Motion(np.array([*hand.pos[:2], safe_z]), 0.0, "rise", yaw, tilt, roll, PRESHAPE)
    height = front[2] if np.linalg.norm((front - hand.pos)[:2]) < 0.03 else safe_z
    return Motion(np.array([*front[:2], height]), 0.0, "approach", yaw, tilt, roll, PRESHAPE)


def swing_door(p: Part, opening: bool, hand: Hand) -> Motion:
    """Turn a hinged door (the microwave's) by its handle bar, along the arc it moves on.

    Opening pinches the vertical bar from above, the fingers either side of it along the
    door, and pulls it round the hinge; closing pushes the door's outer face near the bar
    with closed fingers, always a little further along the arc, until LIBERO counts it
    closed. The hinge turns about the world z axis; q decreases as the door opens.
    """
    hinge = p.pos
    outward = p.local((0.0, -1.0, 0.0))  # the door's outer face, where its bar stands
    yaw = wrap(float(np.arctan2(outward[1], outward[0])))  # hand x along it: fingers along door
    sign = -1.0 if opening else 1.0
    safe_z = p.handle[2] + 0.15

    def along_arc(point: np.ndarray, turn: float) -> np.ndarray:
        r = point[:2] - hinge[:2]
        c, s = np.cos(turn), np.sin(turn)
        return np.array([hinge[0] + c * r[0] - s * r[1], hinge[1] + s * r[0] + c * r[1], point[2]])

    if opening:
        grip = p.handle + 0.006 * outward + np.array([0.0, 0.0, 0.05])  # the palm above its top
        xy_off = np.linalg.norm((grip - hand.pos)[:2])
        near = xy_off < 0.015 and abs(hand.pos[2] - grip[2]) < 0.02
        if hand.gripping and xy_off < 0.03:
            return Motion(along_arc(grip, sign * 0.3), 1.0, "pull", yaw)
        if hand.closed and near and not hand.settled:
            return Motion(hand.pos.copy(), 1.0, "pinch", yaw)
        if hand.closed:
            return Motion(np.array([*hand.pos[:2], max(hand.pos[2], safe_z)]), -1.0, "release")
        if xy_off > 0.008:
            height = safe_z if xy_off > 0.03 else max(hand.pos[2], grip[2] + 0.03)
            return Motion(np.array([*grip[:2], height]), -1.0, "approach", yaw)
        if hand.pos[2] > grip[2] + 0.005:
            return Motion(grip, -1.0, "descend", yaw)
        return Motion(hand.pos.copy(), 1.0, "pinch", yaw)
    # closing: push the outer face of the door, just inside the bar
    contact = p.handle - 0.04 * (p.handle - hinge) / np.linalg.norm((p.handle - hinge)[:2])
    contact = contact + 0.03 * outward
    start = contact + 0.05 * outward
    if not hand.closed:  # a fist to push with, made clear of what it last let go of
        if hand.pos[2] < safe_z - 0.03:
            return Motion(np.array([*hand.pos[:2], safe_z]), -1.0, "rise", yaw)
        return Motion(hand.pos.copy(), 1.0, "close", yaw)
    lateral = float(np.dot((hand.pos - contact)[:2], outward[:2]))
    if abs(hand.pos[2] - p.handle[2]) < 0.03 and -0.01 < lateral < 0.07:
        return Motion(along_arc(contact, sign * 0.25), 1.0, "push", yaw)
    if np.linalg.norm((start - hand.pos)[:2]) < 0.015:
        return Motion(np.array([*start[:2], p.handle[2]]), 1.0, "descend", yaw)
    if hand.pos[2] < safe_z - 0.03:
        return Motion(np.array([*hand.pos[:2], safe_z]), 1.0, "rise", yaw)
    return Motion(np.array([*start[:2], safe_z]), 1.0, "approach", yaw)


def act(pred: Predicate, hand: Hand, scene: dict[str, Any]) -> Motion:
    """The skill for one unmet predicate."""
    if pred.push:
        return push(pred, hand, scene)
    if pred.name in ("in", "on", "lift"):
        return carry(pred, hand, scene)
    if pred.name in ("turnon", "turnoff"):
        return turn_knob(pred, hand, scene)
    return articulate(pred, hand, scene)


def finish(hand: Hand, scene: dict[str, Any]) -> Motion:
    """Everything asked holds: let go and rise clear of every object."""
    tops = [p[2] + shape(k).top for k, p in scene["objects"].items()]
    return retreat(hand, max(tops, default=hand.pos[2]) + 0.08)
