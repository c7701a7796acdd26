"""MP4s of agentview with the active prompt drawn on the frame (probe and evaluation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sarl_dist.envs.base import Env

VIDEO_EVERY = 4  # low-level steps between video frames (LIBERO runs at 20 Hz)


def label(frame: np.ndarray, text: str) -> np.ndarray:
    import textwrap

    import cv2

    out = np.array(frame, dtype=np.uint8, order="C")  # a copy: frames may be read-only
    lines = textwrap.wrap(text, 48)[:3]
    cv2.rectangle(out, (0, 0), (out.shape[1], 4 + 13 * len(lines)), (0, 0, 0), -1)
    for i, line in enumerate(lines):
        cv2.putText(out, line, (3, 13 + 13 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1)
    return out


class Recorder:
    """Wraps env.step to grab a labelled agentview frame every few steps, and the last
    one, so even an episode of a few steps has its video; and reset-to-home, which a robot
    runs on its own side, before and after, so a homing-only episode has one too."""

    def __init__(self, env: Env) -> None:
        self.env, self.frames, self.prompt, self._n = env, [], "", 0
        self._step, self._home = env.step, env.reset_to_home

    def _grab(self) -> None:
        self.frames.append(label(self.env.observe().scene, self.prompt))

    def __enter__(self) -> Recorder:
        def step(action):
            self._step(action)
            self._n += 1
            if self._n % VIDEO_EVERY == 0:
                self._grab()

        def reset_to_home(max_steps: int) -> int:
            self._grab()
            steps = self._home(max_steps)
            self._grab()
            return steps

        self.env.step, self.env.reset_to_home = step, reset_to_home
        return self

    def __exit__(self, *exc) -> None:
        del self.env.step, self.env.reset_to_home
        if exc[0] is None and self._n % VIDEO_EVERY:
            self._grab()

    def save(self, path: Path) -> None:
        import imageio

        if self.frames:
            imageio.mimwrite(path, self.frames, fps=20 // VIDEO_EVERY, macro_block_size=1)
