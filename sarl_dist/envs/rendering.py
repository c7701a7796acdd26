"""Headless MuJoCo rendering, chosen before mujoco is first imported.

`auto`: an explicit MUJOCO_GL wins; a node with an NVIDIA device uses EGL; a CPU
machine uses OSMesa when Debian's libosmesa6 is there, else Mesa's surfaceless EGL.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys
from pathlib import Path

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
