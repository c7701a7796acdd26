"""What the Q-ensemble sees, and how camera frames become it: a leaf of the package.

Every environment (LIBERO, a robot, the demonstrations that seed a robot run) hands the
Q-ensemble a 64x64 RGB image and an 8-d proprioception vector, and the VLA openpi's
frames (rotated 180 degrees, resized with padding); one set of helpers serves them all.
"""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 64  # the Q image is IMAGE_SIZE x IMAGE_SIZE x 3, uint8
PROPRIO_DIM = 8  # LIBERO's state: eef position, axis-angle, two gripper joints


def rotate_180(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[::-1, ::-1])


def resize(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    import cv2

    return cv2.resize(image, (width or height, height), interpolation=cv2.INTER_AREA)


def resize_with_pad(image: np.ndarray, size: int) -> np.ndarray:
    """openpi's resize_with_pad: keep the aspect ratio, pad with black to size x size."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resize(image, nh, nw)
    return out


def proprio(state: np.ndarray) -> np.ndarray:
    """The Q-ensemble's 8-d proprioception: a robot's state, cut or zero-padded."""
    out = np.zeros(PROPRIO_DIM, np.float32)
    state = np.asarray(state, np.float32).ravel()[:PROPRIO_DIM]
    out[: len(state)] = state
    return out
