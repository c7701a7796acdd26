"""Rotation helpers in robosuite's conventions (quaternions are x, y, z, w)."""

from __future__ import annotations

import numpy as np


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_rotvec(m: np.ndarray) -> np.ndarray:
    """Axis-angle vector (axis * angle) of a rotation matrix."""
    cos = np.clip((np.trace(m) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-8:
        return np.zeros(3)
    if np.pi - angle < 1e-4:  # axis from the symmetric part when sin(angle) ~ 0
        axis = np.sqrt(np.clip((np.diag(m) + 1.0) / 2.0, 0.0, None))
        k = int(np.argmax(axis))
        for j in range(3):
            if j != k:
                axis[j] = np.copysign(axis[j], m[k, j] + m[j, k])
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]]) / (2 * np.sin(angle))
    return axis * angle


def quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """openpi's LIBERO state uses the eef quaternion as an axis-angle vector."""
    return matrix_to_rotvec(quat_to_matrix(q)).astype(np.float32)


def orientation_error(target_quat: np.ndarray, current_quat: np.ndarray) -> np.ndarray:
    """World-frame axis-angle rotation taking the current orientation to the target."""
    return matrix_to_rotvec(quat_to_matrix(target_quat) @ quat_to_matrix(current_quat).T)


def down_quat(yaw: float) -> np.ndarray:
    """The gripper pointing straight down, turned by `yaw` about the world z axis."""
    return np.array([np.cos(yaw / 2), np.sin(yaw / 2), 0.0, 0.0])


def hand_yaw(q: np.ndarray) -> float:
    """Yaw of a downward-pointing hand: the direction of its x axis in the table plane."""
    m = quat_to_matrix(q)
    return float(np.arctan2(m[1, 0], m[0, 0]))
