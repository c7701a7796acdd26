"""How the skill VLA hears a prompt: a taught skill, a grammar parse, or a documented failure.

1. A LIBERO-90 instruction in its own scene means its taught goal (curriculum.py),
   compound ones included.
2. A prompt one word away from one of this scene's taught instructions is heard as that
   instruction (fine-tuned VLAs follow the memorised task when one word changes, as
   LIBERO-PRO measured); which one, when several, is fixed by a hash of the prompt.
3. Any other compound sentence (two clauses, "both X and Y", "then": every LIBERO-10
   sentence) collapses into one skill: with probability `p_partial` its first clause,
   else a pick-and-place of an object to a place chosen by a hash of the words.
4. Zero-shot carry-over, with probability `p_zero_shot`: once the scene shows a compound
   sentence's first clause done, the sentence is read whole, so its remaining clauses
   are carried out; a near-copy is read by its own words instead of as the taught one.
   The draws of 3 and 4 are hashes of the words, of where the fixtures stand and where
   the objects no reading of the sentence names rest (to 1 mm: LIBERO's init states
   differ there, and the objects its readings move leave it alone), so a reading is stable
   within an episode (the VLA keeps no state) and varies across episodes: repeating the
   sentence succeeds in about that share of episodes, not more.
5. An atomic sentence is parsed into one predicate with the words of words.py. Words for
   an object that match nothing here land on a stable wrong object (a hash of the words)
   that is not the one being moved; a destination that would be the moved object itself
   is not understood; an unknown verb is not understood. Not understood: the arm holds still.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

from sarl_dist.libero_objects import object_type
from sarl_dist.vla.skill.curriculum import lessons
from sarl_dist.vla.skill.goal import Goal, Predicate, holds
from sarl_dist.vla.skill.words import CONTAINERS, beside, fixture_place, refer, top_of

_RELATIONS = (
    "to the left of|to the right of|to the front of|to the back of|in front of|behind|"
    "on top of|into|inside|onto|under|in|on"
)
_PICK_PLACE = re.compile(
    r"^(?:pick up|pick|grab|take) the (?P<obj>.+?) and (?:put|place|move|set) (?:it|them) "
    r"(?P<rest>.+)$"
)
_PUT = re.compile(r"^(?P<verb>put|place|move|set|stack|push) the (?P<rest>.+)$")
_SPLIT = re.compile(rf" (?P<rel>{_RELATIONS}) ")
_ARTICULATE = re.compile(r"^(?P<verb>open|close|shut) the (?P<what>.+)$")
_STOVE = re.compile(r"^(?:turn|switch) (?:(?P<a>on|off) the stove|the stove (?P<b>on|off))$")
_LIFT = re.compile(r"^(?:pick up|grab|lift|take) the (?P<obj>.+)$")
_COMPOUND = re.compile(
    r" and (?:put|place)\b(?! (?:it|them)\b)| and (?:close|open|turn|pick|push|stack)\b|"
    r"\bboth\b|\bthen\b"
)


def unit_hash(words: str) -> float:
    """A number in [0, 1) fixed by the words."""
    return int.from_bytes(hashlib.sha256(words.encode()).digest()[:8], "little") / 2**64


def stable_choice(words: str, options: list[str]) -> str:
    return sorted(options)[int(unit_hash(words) * len(options))]


def movable(scene: dict[str, Any]) -> list[str]:
    """Objects a pick-and-place can move (not containers others go into)."""
    return [k for k in scene["objects"] if not k.startswith(CONTAINERS)]


def recall(text: str, scene_name: str | None) -> str:
    """The instruction the VLA hears: a near-copy of a taught one is heard as that one."""
    taught = lessons(scene_name)
    if text in taught:
        return text
    words = text.split()
    near = [
        t
        for t in taught
        if len(t.split()) == len(words)
        and sum(a != b for a, b in zip(t.split(), words, strict=True)) == 1
    ]
    return stable_choice(text, near) if near else text


def scene_draw(text: str, scene: dict[str, Any], named: set[str], purpose: str) -> float:
    """A number in [0, 1) fixed by the words and by where the fixtures stand and the
    objects the sentence does not name rest (to 1 mm): one draw per episode, read off
    the observation."""
    poses = dict(scene.get("fixture_poses", {}))
    poses.update(
        (k, p)
        for k, p in scene["objects"].items()
        if k not in named and not any(n.startswith(k + "_") for n in named)
    )
    places = ";".join(
        f"{k}:{np.round(np.asarray(poses[k][:3], dtype=np.float64) * 1000).astype(int)}"
        for k in sorted(poses)
    )
    return unit_hash(f"{purpose}|{text}|{places}")


def understand(
    text: str, scene: dict[str, Any], p_partial: float, p_zero_shot: float = 0.0
) -> Goal | None:
    """The goal a normalised prompt means in this scene, or None (not understood)."""
    taught = lessons(scene.get("scene"))
    heard = recall(text, scene.get("scene"))
    if heard != text:  # a near-copy: the taught one, or sometimes its own words
        literal = own_words(text, scene, p_partial, p_zero_shot)
        return (literal,) if literal is not None else taught[heard]
    if text in taught:
        return taught[text]
    if _COMPOUND.search(text):
        return _collapse(text, scene, p_partial, p_zero_shot)
    pred = parse(text, scene)
    return (pred,) if pred is not None else None


def parse(text: str, scene: dict[str, Any]) -> Predicate | None:
    """One atomic instruction as one predicate (None: not understood)."""
    if m := _PICK_PLACE.match(text):
        return _placement(m["obj"], m["rest"], scene, push=False)
    if m := _PUT.match(text):
        for split in _SPLIT.finditer(m["rest"]):  # the first split whose object is known
            obj = m["rest"][: split.start()]
            if refer(obj, scene) is not None:
                break
        else:
            split = _SPLIT.search(m["rest"])
            if split is None:
                return None
            obj = m["rest"][: split.start()]
        return _placement(obj, m["rest"][split.start() + 1 :], scene, push=m["verb"] == "push")
    if m := _ARTICULATE.match(text):
        what = m["what"].removesuffix(" door")
        place = fixture_place(what, scene)
        if place is None:
            return None
        target = place[1] if "drawer" in what else _fixture(place[1])
        return Predicate("open" if m["verb"] == "open" else "close", (target,))
    if m := _STOVE.match(text):
        stove = fixture_place("stove", scene)
        return Predicate(f"turn{m['a'] or m['b']}", (_fixture(stove[1]),)) if stove else None
    if m := _LIFT.match(text):
        return Predicate("lift", (_object(m["obj"], scene, avoid=None),))
    return None


def _fixture(site: str) -> str:
    """The fixture a region belongs to: flat_stove_1_cook_region -> flat_stove_1."""
    return re.match(r"^(.+?_\d+)_", site)[1]


def _object(phrase: str, scene: dict[str, Any], avoid: str | None) -> str:
    """The object a phrase names, or a stable wrong one (never `avoid`) for unknown words."""
    key = refer(phrase, scene)
    if key is not None:
        return key
    return stable_choice(phrase, [k for k in movable(scene) if k != avoid] or movable(scene))


def _placement(obj_words: str, rest: str, scene: dict[str, Any], push: bool) -> Predicate | None:
    """ "<relation> the <place>" for an object: In/On with a region or an object."""
    m = re.match(rf"^(?P<rel>{_RELATIONS}) (?:the )?(?P<dst>.+)$", rest)
    if m is None:
        return None
    rel, dst = m["rel"], m["dst"]
    where = _destination(rel, dst, scene)
    obj = _object(obj_words, scene, avoid=where[1] if where else None)
    if where is None:  # a place it does not know: a stable wrong one, never the object
        places = [k for k in (*scene["sites"], *movable(scene)) if k != obj and "burner" not in k]
        where = ("on", stable_choice(dst, places))
    if where[1] == obj:
        return None
    return Predicate(where[0], (obj, where[1]), push=push)


def _destination(rel: str, dst: str, scene: dict[str, Any]) -> tuple[str, str] | None:
    if rel.startswith(("to the", "in front", "behind")):
        side = rel.removeprefix("to the ").removesuffix(" of").replace("in front", "front")
        anchor = refer(dst, scene)
        site = beside(side, anchor or dst.replace(" ", "_"), scene)
        return ("on", site) if site else None
    if rel == "under":
        shelf = fixture_place(dst, scene)
        return ("in", shelf[1].replace("_top_region", "_bottom_region")) if shelf else None
    if rel == "on top of" and (site := top_of(dst, scene)):
        return "on", site
    if place := fixture_place(dst, scene):
        return place
    if rel == "on" and (site := top_of(dst, scene)):  # "on the cabinet"
        return "on", site
    key = refer(dst, scene)
    return ("on", key) if key else None  # on, or "in the bowl": LIBERO's On either way


def clauses(text: str) -> list[str]:
    """A compound sentence's atomic clauses: "both X and Y" shared out, "it" and a
    closing "inside" named by what the first clause acts on."""
    parts = re.split(
        r" and (?=(?:put|place)\b(?! (?:it|them)\b)|(?:close|open|turn|pick|push|stack)\b)"
        r"|,? then ",
        text,
    )
    rest = r"(?P<rest>(?:in|on|into|onto) the .+)$"
    if m := re.match(
        rf"^(?P<verb>.+?) both (?:the )?(?P<x>.+?) and (?:the )?(?P<y>.+?) {rest}", parts[0]
    ):
        parts[:1] = [f"{m['verb']} the {m[n]} {m['rest']}" for n in ("x", "y")]
    elif m := re.match(rf"^(?P<verb>.+?) both (?:the )?(?P<x>.+?)s {rest}", parts[0]):
        parts[:1] = [f"{m['verb']} the {w}{m['x']} {m['rest']}" for w in ("", "other ")]
    thing = re.search(
        r" (?:in|on|into|onto|inside) the (.+)$|^(?:turn on|turn off|open|close) the (.+)$",
        parts[0],
    )
    if thing:
        name = f"the {thing[1] or thing[2]}"
        parts[1:] = [
            re.sub(r"\binside$", f"in {name}", re.sub(r"\bit\b", name, c)) for c in parts[1:]
        ]
    return parts


def whole_goal(text: str, scene: dict[str, Any]) -> Goal | None:
    """A compound sentence's clauses as predicates, up to the first it does not understand
    (None: not even the first); "the other X" is the one of X's family that the first
    clause does not move."""
    goal: list[Predicate] = []
    for clause in clauses(text):
        plain = clause.replace("the other ", "the ")
        pred = parse(plain, scene) if not _COMPOUND.search(clause) else None
        if pred is None:
            return tuple(goal) or None
        if plain != clause and goal and pred.moved == goal[0].moved:
            kin = [k for k in sorted(scene["objects"]) if object_type(k) == object_type(pred.moved)]
            kin.remove(pred.moved)
            if not kin:
                return tuple(goal)
            pred = Predicate(pred.name, (kin[0], *pred.args[1:]), pred.push)
        goal.append(pred)
    return tuple(goal)


def _collapse(
    text: str, scene: dict[str, Any], p_partial: float, p_zero_shot: float
) -> Goal | None:
    """A compound sentence becomes one skill (its first clause, or a misgrounded one), or,
    once the scene shows the first clause done, sometimes the whole sentence."""
    whole, first, carry = compound_draws(text, scene, p_partial, p_zero_shot)
    if not first:
        return misread(text, scene)
    return whole if carry and holds(whole[0], scene) else whole[:1]


def compound_draws(
    text: str, scene: dict[str, Any], p_partial: float, p_zero_shot: float
) -> tuple[Goal | None, bool, bool]:
    """A compound's clauses as a goal, whether this scene draws its first-clause reading
    (else a misreading), and whether it then reads it whole once the first shows done."""
    whole = whole_goal(text, scene)
    if whole is None:
        return None, False, False
    named = _moved(whole, misread(text, scene))
    first = scene_draw(text, scene, named, "reading") < p_partial
    carry = first and len(whole) > 1 and scene_draw(text, scene, named, "carry") < p_zero_shot
    return whole, first, carry


def own_words(
    text: str, scene: dict[str, Any], p_partial: float, p_zero_shot: float
) -> Predicate | None:
    """A near-copy's own words as a predicate, where this scene draws that reading: both
    draws, as for a compound read whole, so every untaught sentence is read right in
    the same share of episodes."""
    literal = parse(text, scene)
    if literal is None:
        return None
    named = _moved((literal,), lessons(scene.get("scene")).get(recall(text, scene.get("scene"))))
    heard = scene_draw(text, scene, named, "reading") < p_partial
    return literal if heard and scene_draw(text, scene, named, "carry") < p_zero_shot else None


def _moved(*readings: Goal | None) -> set[str]:
    """What the readings of a sentence name: the draws leave these out, so that whichever
    reading an episode runs, the objects it moves do not change the draw (one reading per
    episode, not a new draw each time the arm moves something)."""
    return {a for goal in readings for p in goal or () for a in p.args}


def misread(text: str, scene: dict[str, Any]) -> Goal | None:
    """A pick-and-place of an object to a place, both chosen by a hash of the words."""
    objects = movable(scene)
    if not objects:
        return None
    obj = stable_choice(text, objects)
    places = [
        s for s in scene["sites"] if s.endswith(("contain_region", "cook_region", "top_side"))
    ] + [k for k in scene["objects"] if k.startswith("plate") and k != obj]
    if not places:
        return None
    place = stable_choice(text[::-1], places)
    return (Predicate("in" if place.endswith("contain_region") else "on", (obj, place)),)
