"""The limits the robot server enforces on every action, whatever the policy sends.

They live on the robot side so that no learner, VLA or network fault can bypass them:
each dimension is clipped to its bounds, and a translation that would push the end
effector further out of the workspace box is zeroed on that axis (motion back inside is
always allowed, so an arm that drifted out can return). Every change is reported as an
event, which the server logs and returns with the step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sarl_dist.config import RobotSafetyConfig


class Safety:
    def __init__(self, cfg: RobotSafetyConfig) -> None:
        self.cfg = cfg
        self.action_low = np.asarray(cfg.action_low, np.float64)
        self.action_high = np.asarray(cfg.action_high, np.float64)
        self.workspace_low = np.asarray(cfg.workspace_low, np.float64)
        self.workspace_high = np.asarray(cfg.workspace_high, np.float64)

    @property
    def action_dim(self) -> int:
        return len(self.action_low)

    def apply(
        self, action: np.ndarray, eef_pos: np.ndarray, step: int
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The action to execute at end-effector position `eef_pos`, and what was changed.

        Raises ValueError for an action of the wrong shape or with non-finite values, and for
        a non-finite `eef_pos` (the workspace check would silently pass on NaN).
        """
        requested = np.asarray(action, np.float64)
        if requested.shape != (self.action_dim,):
            raise ValueError(f"action shape {requested.shape}, expected ({self.action_dim},)")
        if not np.isfinite(requested).all():
            raise ValueError(f"non-finite action at step {step}: {requested.tolist()}")
        pos = np.asarray(eef_pos, np.float64)
        if pos.shape != (3,) or not np.isfinite(pos).all():
            raise ValueError(f"end-effector position {pos.tolist()} is unusable; not moving")
        executed = np.clip(requested, self.action_low, self.action_high)
        changed: list[tuple[str, list[int]]] = []
        if bounds := np.flatnonzero(executed != requested).tolist():
            changed.append(("action_bounds", bounds))
        outward = ((pos <= self.workspace_low) & (executed[:3] < 0)) | (
            (pos >= self.workspace_high) & (executed[:3] > 0)
        )
        if workspace := np.flatnonzero(outward).tolist():
            executed[workspace] = 0.0
            changed.append(("workspace", workspace))
        events = [
            {
                "step": int(step),
                "reason": reason,
                "dims": dims,
                "action": requested.tolist(),
                "executed": executed.tolist(),
            }
            for reason, dims in changed
        ]
        return executed.astype(np.float32), events
