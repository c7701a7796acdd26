"""The skill VLA's training set: LIBERO-90's instructions in their scenes, with their goals.

pi0.5 fine-tuned on LIBERO-90 was taught each of its 90 instructions in its own scene,
from demonstrations that reach the task's goal. Here the meaning a taught instruction has
is that goal, read from the installed LIBERO-90 BDDL file, compound goals included
("... in the top drawer of the cabinet and close it"): to a model trained on them those
are single known skills. Only LIBERO-90 is read; other suites' goals stay unknown.
"""

from __future__ import annotations

import functools

from sarl_dist.libero_setup import libero_suite, scene_name
from sarl_dist.vla.skill.goal import Goal, Predicate


def bddl_goal(path: str) -> Goal:
    """The (:goal (And ...)) of a BDDL file as predicates."""
    from bddl.parsing import scan_tokens

    groups = [g for g in scan_tokens(filename=path) if isinstance(g, list) and g]
    goal = next(g for g in groups if g[0] == ":goal")[1]
    if goal[0].lower() != "and":
        raise ValueError(f"{path}: expected an (And ...) goal, got {goal[0]!r}")
    return tuple(Predicate(p[0].lower(), tuple(p[1:])) for p in goal[1:])


@functools.cache
def taught() -> dict[str, dict[str, Goal]]:
    """scene -> {instruction (lower case): goal} for every LIBERO-90 task."""
    suite = libero_suite("libero_90")
    lessons: dict[str, dict[str, Goal]] = {}
    for i in range(suite.n_tasks):
        task = suite.get_task(i)
        goal = bddl_goal(suite.get_task_bddl_file_path(i))
        lessons.setdefault(scene_name(task), {})[task.language.lower()] = goal
    return lessons


def lessons(scene: str | None) -> dict[str, Goal]:
    """What training taught in this scene (nothing in a scene LIBERO-90 does not have)."""
    return taught().get(scene, {}) if scene else {}
