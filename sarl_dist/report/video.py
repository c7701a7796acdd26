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
    one, so even an episode of a few steps has its video."""

    def __init__(self, env: Env) -> None:
        self.env, self.frames, self.prompt, self._n = env, [], "", 0
        self._step = env.step

    def __enter__(self) -> Recorder:
        def step(action):
            self._step(action)
            self._n += 1
            if self._n % VIDEO_EVERY == 0:
                self.frames.append(label(self.env.observe().scene, self.prompt))

        self.env.step = step
        return self

    def __exit__(self, *exc) -> None:
        del self.env.step
        if exc[0] is None and self._n % VIDEO_EVERY:
            self.frames.append(label(self.env.observe().scene, self.prompt))

    def save(self, path: Path) -> None:
        import imageio

        if self.frames:
            imageio.mimwrite(path, self.frames, fps=20 // VIDEO_EVERY, macro_block_size=1)
