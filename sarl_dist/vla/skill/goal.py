"""What an instruction means to the skill VLA: a goal of LIBERO's own predicates.

LIBERO-90's 90 goals use six predicates over named objects, regions and fixtures:
In, On, Open, Close, Turnon, Turnoff. The skill VLA's meaning of a sentence is such a
goal, whether training taught it (the task's BDDL goal) or its grammar builds it from
the words; one skill per predicate executes it. `holds` judges a predicate from the
observation alone, the way a policy sees from its images that a drawer is open; a goal
of several predicates is worked on one unmet predicate at a time (`next_unmet`), so a
taught compound instruction runs phase by phase with no memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sarl_dist.vla.skill.fixtures import part_of, part_state

PREDICATES = ("in", "on", "open", "close", "turnon", "turnoff", "lift")


@dataclass(frozen=True)
class Predicate:
    """One goal condition over scene keys: ("in", obj, region), ("open", drawer), ...

    `lift` (hold an object up) is no LIBERO goal; it is what "pick up the X" asks.
    """

    name: str
    args: tuple[str, ...]
    push: bool = False  # slide the object there instead of carrying it ("push the plate")

    def __post_init__(self) -> None:
        if self.name not in PREDICATES:
            raise ValueError(f"unknown predicate {self.name!r}; known: {', '.join(PREDICATES)}")

    @property
    def moved(self) -> str | None:
        """The object this predicate moves (None for fixture predicates)."""
        return self.args[0] if self.name in ("in", "on", "lift") else None

    @property
    def target(self) -> str:
        """Where the object goes, or the fixture part it acts on."""
        return self.args[-1]


Goal = tuple[Predicate, ...]


def position(key: str, scene: dict[str, Any]) -> np.ndarray:
    """World position of an object, a site or a fixture part named in a goal."""
    if key in scene["objects"]:
        return np.asarray(scene["objects"][key][:3], dtype=np.float64)
    if key in scene["sites"]:
        return np.asarray(scene["sites"][key], dtype=np.float64)
    raise KeyError(key)


def exists(key: str, scene: dict[str, Any]) -> bool:
    return key in scene["objects"] or key in scene["sites"] or part_of(key, scene) is not None


def holds(pred: Predicate, scene: dict[str, Any]) -> bool:
    """Whether the observation shows the predicate satisfied (LIBERO's rules, from poses)."""
    if pred.name in ("open", "close", "turnon", "turnoff"):
        part = part_of(pred.target, scene)
        return part is not None and part_state(part, scene) == pred.name
    if pred.name == "lift":
        return False  # holding it up is an activity, never finished
    obj = position(pred.moved, scene)
    dest = position(pred.target, scene)
    if pred.target in scene["sites"]:
        half = np.asarray(scene["site_extents"][pred.target], dtype=np.float64)
        d = obj - dest
        if pred.name == "in":  # inside the region's box (LIBERO: 1 cm of slack below)
            return bool(np.all(np.abs(d[:2]) < half[:2]) and -half[2] - 0.01 < d[2] < half[2])
        # on a region: over it and resting just above its surface
        return bool(np.all(np.abs(d[:2]) < half[:2]) and half[2] - 0.005 < d[2] < half[2] + 0.1)
    # on another object: centred over it (LIBERO: within 3 cm) and above it
    return bool(np.linalg.norm((obj - dest)[:2]) < 0.03 and dest[2] <= obj[2] < dest[2] + 0.15)


def order(goal: Goal) -> Goal:
    """The goal's predicates in an order that can be carried out.

    A drawer that is only to be shut is shut first (it is out of the way then); a drawer
    is opened before something is put in it and shut after; an object that another is to
    be stacked on is moved to its own place first. Otherwise the goal's order.
    """
    inside = {q.target for q in goal if q.name == "in"}
    bases = {q.target for q in goal if q.name == "on"}

    def rank(p: Predicate) -> int:
        if p.name == "close":
            return 4 if p.target in inside else 0
        if p.moved is None:
            return 1
        return 2 if p.moved in bases else 3

    return tuple(sorted(goal, key=rank))


def next_unmet(goal: Goal, scene: dict[str, Any], held: str | None) -> Predicate | None:
    """The first predicate, in working order, that the observation does not show done.

    An object still in the hand is not placed yet, wherever it is.
    """
    unmet = (p for p in order(goal) if (held and p.moved == held) or not holds(p, scene))
    return next(unmet, None)
