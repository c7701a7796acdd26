"""What a LIBERO scene holds, read from the task's BDDL file (no simulator, no network).

The template proposer uses it the way a VLM uses the camera image: to name the objects
it sees and the places and fixtures it could use, so its wrong candidates are wrong in
the scene's own terms (another object into the basket, the mug into the microwave).
Names are LIBERO's language for each object type (the words its instructions use).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sarl_dist.config import EnvConfig

# Where things go on each receptacle type, as LIBERO-90 instructions say it.
PLACES: dict[str, tuple[str, ...]] = {
    "basket": ("in the basket",),
    "plate": ("on the plate",),
    "flat_stove": ("on the stove",),
    "microwave": ("in the microwave",),
    "desk_caddy": tuple(f"in the {s} compartment of the caddy" for s in ("back", "front")),
    "white_cabinet": tuple(f"in the {d} drawer of the cabinet" for d in ("top", "bottom")),
    "wooden_cabinet": tuple(f"in the {d} drawer of the cabinet" for d in ("top", "bottom")),
    "wine_rack": ("on the wine rack",),
}
# Commands a fixture affords by itself.
COMMANDS: dict[str, tuple[str, ...]] = {
    "flat_stove": ("turn on the stove", "turn off the stove"),
    "microwave": ("open the microwave", "close the microwave"),
    "white_cabinet": tuple(
        f"{v} the {d} drawer of the cabinet" for v in ("open", "close") for d in ("top", "bottom")
    ),
}
COMMANDS["wooden_cabinet"] = COMMANDS["white_cabinet"]
_TABLES = re.compile(r"_table$")


@dataclass(frozen=True)
class Scene:
    objects: tuple[str, ...]  # movable objects, by their name in LIBERO's language
    places: tuple[str, ...]  # "in the basket", "on the stove", ...
    commands: tuple[str, ...]  # "turn on the stove", "close the microwave", ...
    aliases: tuple[tuple[str, tuple[str, ...]], ...]  # other words for an object

    def other_names(self, name: str) -> tuple[str, ...]:
        return dict(self.aliases).get(name, ())


def _declared(group: list) -> list[str]:
    """Types declared in a BDDL `name ... - type` group, one per instance."""
    types, names = [], []
    tokens = list(group)
    while tokens:
        token = tokens.pop(0)
        if token == "-":
            types += [tokens.pop(0)] * len(names)
            names = []
        else:
            names.append(token)
    return types


def scene_from_bddl(path: str) -> Scene:
    from bddl.parsing import scan_tokens

    from sarl_dist.libero_objects import object_phrases

    groups = {g[0]: g[1:] for g in scan_tokens(filename=path) if isinstance(g, list) and g}
    fixtures = [t for t in _declared(groups.get(":fixtures", [])) if not _TABLES.search(t)]
    objects = _declared(groups.get(":objects", []))
    kinds = list(dict.fromkeys(fixtures + objects))
    names, aliases = [], []
    for kind in dict.fromkeys(objects):
        phrases = [p for p in dict.fromkeys(object_phrases(kind)) if not re.search(r"\d", p)]
        names.append(phrases[0])
        aliases.append((phrases[0], tuple(phrases[1:])))
    return Scene(
        objects=tuple(names),
        places=tuple(p for k in kinds for p in PLACES.get(k, ())),
        commands=tuple(c for k in kinds for c in COMMANDS.get(k, ())),
        aliases=tuple(aliases),
    )


def libero_scene(cfg: EnvConfig) -> Scene:
    from sarl_dist.libero_setup import libero_suite, resolve_task

    suite = libero_suite(cfg.libero.suite)
    return scene_from_bddl(suite.get_task_bddl_file_path(resolve_task(suite, cfg.task)))
