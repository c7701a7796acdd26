"""Headless MuJoCo rendering, chosen before mujoco is first imported, and the thread that
owns a simulator's GL context.

`auto`: an explicit MUJOCO_GL wins; a node with an NVIDIA device uses EGL; a CPU
machine uses OSMesa when Debian's libosmesa6 is there, else Mesa's surfaceless EGL.

A simulator's offscreen GL context is current only in the thread that created it:
robosuite renders without making it current, so a frame rendered from any other thread
comes back black or as noise (measured: mean pixel 0.0 instead of ~69). `GLThread` runs
a simulator's whole life (construction, steps, renders, close) on one thread of its own,
for callers such as a server whose calls arrive on other threads.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)
RENDERERS = ("auto", "egl", "osmesa", "egl_surfaceless")


def _has_nvidia() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists()


def choose_renderer(mode: str = "auto") -> str:
    if mode not in RENDERERS:
        raise ValueError(f"renderer must be one of {', '.join(RENDERERS)}, got {mode!r}")
    if mode != "auto":
        return mode
    explicit = os.environ.get("MUJOCO_GL")
    if explicit:
        if explicit == "egl" and os.environ.get("EGL_PLATFORM") == "surfaceless":
            return "egl_surfaceless"
        return explicit
    if _has_nvidia():
        return "egl"
    if ctypes.util.find_library("OSMesa"):
        return "osmesa"
    return "egl_surfaceless"


def configure_rendering(mode: str = "auto") -> str:
    """Set MUJOCO_GL and friends for `mode`; returns the renderer in effect."""
    renderer = choose_renderer(mode)
    gl = "egl" if renderer == "egl_surfaceless" else renderer
    if "mujoco" in sys.modules and os.environ.get("MUJOCO_GL") not in (None, gl):
        log.warning(
            "mujoco is already imported with MUJOCO_GL=%s; %s will not take effect",
            os.environ.get("MUJOCO_GL"),
            gl,
        )
        return os.environ["MUJOCO_GL"]
    os.environ["MUJOCO_GL"] = gl
    os.environ["PYOPENGL_PLATFORM"] = gl
    if renderer == "egl_surfaceless":
        os.environ["EGL_PLATFORM"] = "surfaceless"
    return renderer


class GLThread:
    """One thread that owns a GL context: `call` runs a function there and returns its
    result (or raises its exception)."""

    def __init__(self, name: str = "gl") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
