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


def orientation_error(target: np.ndarray, current_quat: np.ndarray) -> np.ndarray:
    """World-frame axis-angle rotation taking the current orientation to the target
    (a quaternion or a rotation matrix)."""
    target = np.asarray(target, dtype=np.float64)
    goal = target if target.shape == (3, 3) else quat_to_matrix(target)
    return matrix_to_rotvec(goal @ quat_to_matrix(current_quat).T)


def down_quat(yaw: float) -> np.ndarray:
    """The gripper pointing straight down, turned by `yaw` about the world z axis."""
    return np.array([np.cos(yaw / 2), np.sin(yaw / 2), 0.0, 0.0])


def hand_down(yaw: float, tilt: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation of a gripper pointing down, turned by `yaw` about the world z axis, its
    fingers tipped by `tilt` toward the hand's -x (so the wrist stays back from what the
    fingertips push), then rolled by `roll` about its own pointing axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    down = np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])
    ct, st = np.cos(tilt), np.sin(tilt)
    cr, sr = np.cos(roll), np.sin(roll)
    tipped = np.array([[ct, 0.0, -st], [0.0, 1.0, 0.0], [st, 0.0, ct]])
    return down @ tipped @ np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])


def lean(rot: np.ndarray, toward: np.ndarray) -> np.ndarray:
    """`rot` turned about a horizontal axis so that its z axis tips toward the horizontal
    vector `toward` by |toward| radians."""
    angle = float(np.linalg.norm(toward))
    if angle < 1e-9:
        return rot
    k = np.cross([0.0, 0.0, -1.0], [toward[0] / angle, toward[1] / angle, 0.0])
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    turn = np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx
    return turn @ rot


def hand_yaw(q: np.ndarray) -> float:
    """Yaw of a downward-pointing hand (a quaternion or a rotation matrix): the direction
    of its x axis in the table plane."""
    q = np.asarray(q, dtype=np.float64)
    m = q if q.shape == (3, 3) else quat_to_matrix(q)
    return float(np.arctan2(m[1, 0], m[0, 0]))
