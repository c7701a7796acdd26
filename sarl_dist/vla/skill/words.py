"""The skill VLA's words: noun phrases of the LIBERO suites resolved from the poses it sees.

An object is named by its family ("the black bowl"), an attribute or position among its
kind ("the left plate", "the middle black bowl", "the butter at the back", "the book on
the right") or a spatial relation to something else ("the black bowl next to the
ramekin", "between the plate and the ramekin", "on the cookie box", "in the top drawer of
the wooden cabinet", "from table center"). Places are fixture regions and objects ("the
basket", "the top drawer of the cabinet", "the back compartment of the caddy", "the
cabinet shelf", "the wine rack", "to the front of the stove"). Everything is resolved
from the observation: which bowl is "next to the ramekin" is read off their positions.

Directions are as LIBERO's language uses them, seen from the front camera: left is -y,
front is +x. The table's centre is the world origin, where LIBERO's tables stand.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from sarl_dist.libero_objects import object_phrases, object_type

# Objects nothing is put *on* by carrying them (containers have a region for "in").
CONTAINERS = ("basket", "wooden_tray")
_SIDE_AXIS = {"left": (1, -1), "right": (1, 1), "front": (0, 1), "back": (0, -1)}
_DRAWER = re.compile(
    r"^(?P<level>top|middle|bottom) (?:layer of the )?drawer(?: of the (?:\w+ )?cabinet)?$"
)
_COMPARTMENT = re.compile(r"^(?P<side>front|back|left|right) compartment of the (?:desk )?caddy$")


def _strip(phrase: str) -> str:
    return re.sub(r"^the ", "", phrase.strip())


def _xyz(scene: dict[str, Any], key: str) -> np.ndarray:
    pose = scene["objects"].get(key)
    where = pose[:3] if pose is not None else scene["sites"][key]
    return np.asarray(where, dtype=np.float64)


def _site(scene: dict[str, Any], pattern: str) -> str | None:
    """The first site (sorted) whose name matches the pattern."""
    return next((s for s in sorted(scene["sites"]) if re.search(pattern, s)), None)


def family(noun: str, scene: dict[str, Any]) -> list[str]:
    """The scene's objects a bare noun names ("bowl": every bowl), in key order."""
    return sorted(k for k in scene["objects"] if noun in object_phrases(k))


def fixture_place(phrase: str, scene: dict[str, Any]) -> tuple[str, str] | None:
    """(predicate, site) for a fixture place: "top drawer of the cabinet" -> in, its region."""
    phrase = _strip(phrase)
    if m := _DRAWER.match(phrase):
        site = _site(scene, rf"cabinet_\d+_{m['level']}_region$")
        return ("in", site) if site else None
    if m := _COMPARTMENT.match(phrase):
        site = _site(scene, rf"caddy_\d+_{m['side']}_contain_region$")
        return ("in", site) if site else None
    places = {
        "microwave": ("in", r"microwave_\d+_heating_region$"),
        "stove": ("on", r"stove_\d+_cook_region$"),
        "wine rack": ("on", r"wine_rack_\d+_top_region$"),
        "rack": ("on", r"wine_rack_\d+_top_region$"),
        "cabinet shelf": ("in", r"shelf_\d+_top_region$"),
        "shelf": ("in", r"shelf_\d+_top_region$"),
    }
    if phrase in places:
        name, pattern = places[phrase]
        site = _site(scene, pattern)
        return (name, site) if site else None
    for container in CONTAINERS:  # "the basket" -> what is inside it
        if phrase in object_phrases(container):
            site = _site(scene, rf"^{container}_\d+_contain_region$")
            return ("in", site) if site else None
    return None


def top_of(phrase: str, scene: dict[str, Any]) -> str | None:
    """The top surface of a cabinet or shelf ("top of the cabinet", "the shelf")."""
    phrase = re.sub(r"^top of ", "", _strip(phrase))
    phrase = _strip(phrase)
    if phrase in ("cabinet", "wooden cabinet", "white cabinet"):
        return _site(scene, r"cabinet_\d+_top_side$") or _site(scene, r"shelf_\d+_top_side$")
    if phrase in ("shelf", "cabinet shelf"):
        return _site(scene, r"shelf_\d+_top_side$")
    return None


def beside(side: str, anchor: str, scene: dict[str, Any]) -> str | None:
    """LIBERO's region to one side of an object or fixture ("to the front of the stove")."""
    side = {"behind": "back"}.get(side, side)
    words = {w.replace(" ", "_") for w in object_phrases(anchor)} | {object_type(anchor)}
    for site in sorted(scene["sites"]):
        for w in words:
            if site.endswith(f"_{w}_{side}_region") or site.endswith(f"_{w}_{side}_contain_region"):
                return site
    return None


def _location(phrase: str, scene: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Where a landmark is: (centre, half-size) of an object or a fixture place."""
    phrase = _strip(phrase)
    place = fixture_place(phrase, scene)
    site = place[1] if place else top_of(phrase, scene)
    if site is not None:
        return _xyz(scene, site), np.asarray(scene["site_extents"][site], dtype=np.float64)
    key = refer(phrase, scene)
    return (_xyz(scene, key), np.array([0.045, 0.045, 0.02])) if key else None


def _on(key: str, where: tuple[np.ndarray, np.ndarray], scene: dict[str, Any]) -> bool:
    centre, half = where
    p = _xyz(scene, key)
    return bool(np.all(np.abs(p - centre)[:2] < half[:2] + 0.01) and p[2] > centre[2] - 0.005)


def _inside(key: str, where: tuple[np.ndarray, np.ndarray], scene: dict[str, Any]) -> bool:
    centre, half = where
    return bool(np.all(np.abs(_xyz(scene, key) - centre) < half + 0.01))


def _extreme(keys: list[str], side: str, scene: dict[str, Any]) -> str:
    axis, sign = _SIDE_AXIS[side]
    return max(keys, key=lambda k: sign * _xyz(scene, k)[axis])


def _middle(keys: list[str], scene: dict[str, Any]) -> str:
    """The median one along the axis they are spread over most."""
    points = np.array([_xyz(scene, k)[:2] for k in keys])
    axis = int(np.argmax(np.ptp(points, axis=0)))
    ranked = sorted(keys, key=lambda k: _xyz(scene, k)[axis])
    return ranked[len(ranked) // 2]


def _nearest(keys: list[str], point: np.ndarray, scene: dict[str, Any]) -> str:
    return min(keys, key=lambda k: np.linalg.norm(_xyz(scene, k)[:2] - point[:2]))


_RELATIONS = (
    (re.compile(r"^(?P<np>.+?) between the (?P<a>.+?) and the (?P<b>.+)$"), "between"),
    (re.compile(r"^(?P<np>.+?) next to the (?P<a>.+)$"), "next"),
    (
        re.compile(
            r"^(?P<np>.+?) (?:from|at|in|on) (?:the )?(?:table center|center of the table)$"
        ),
        "center",
    ),
    (
        re.compile(
            r"^(?P<np>.+?) (?:on the|at the|in the) (?P<side>left|right|front|back|middle)$"
        ),
        "side",
    ),
    (re.compile(r"^(?P<np>.+?) (?:on top of|on) the (?P<a>.+)$"), "on"),
    (re.compile(r"^(?P<np>.+?) in the (?P<a>.+)$"), "in"),
)


def refer(phrase: str, scene: dict[str, Any]) -> str | None:
    """The scene object a noun phrase names, or None when the words match nothing here.

    A phrase that could name the object in the hand (`scene["held"]`) names it: moving it
    undoes the relation it was named by ("the black bowl on the cookie box" is no longer
    on it once lifted, and "next to the cookie box" is then the other bowl)."""
    phrase = _strip(phrase)
    held = scene.get("held")
    for pattern, relation in _RELATIONS:
        m = pattern.match(phrase)
        if not m:
            continue
        keys = _kind(m["np"], scene)
        if not keys:
            continue
        if held in keys:
            return held
        if relation == "side":
            side = m["side"]
            return _middle(keys, scene) if side == "middle" else _extreme(keys, side, scene)
        if relation == "center":
            return _nearest(keys, np.zeros(3), scene)
        anchors = [_location(m[g], scene) for g in ("a", "b") if g in m.groupdict()]
        if any(a is None for a in anchors):
            continue
        if relation == "between":
            return _nearest(keys, (anchors[0][0] + anchors[1][0]) / 2, scene)
        fits = [
            k
            for k in keys
            if (_inside if relation == "in" else _on)(k, anchors[0], scene)
            and np.linalg.norm(_xyz(scene, k) - anchors[0][0]) > 1e-6
        ]
        if relation == "next":
            return _nearest(
                [k for k in keys if not _on(k, anchors[0], scene)] or keys, anchors[0][0], scene
            )
        if fits:
            return fits[0]
    keys = _kind(phrase, scene)
    return held if held in keys else (keys[0] if keys else None)


def _kind(phrase: str, scene: dict[str, Any]) -> list[str]:
    """Objects named by a noun with an optional leading position ("left plate")."""
    m = re.match(r"^(?P<side>left|right|front|back|middle) (?P<noun>.+)$", phrase)
    if m and (keys := family(m["noun"], scene)):
        side = m["side"]
        return [_middle(keys, scene) if side == "middle" else _extreme(keys, side, scene)]
    return family(phrase, scene)
