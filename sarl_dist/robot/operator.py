"""The person at the robot, and how a one-robot run's episodes go with them.

Each episode: the person resets the scene and confirms (nothing moves before), the arm
goes home and the episode runs; "s" + Enter during it marks success at once (the arm
stops there); at the end the person answers whether it succeeded, which is final: the
episode's last transition is relabelled with it before it reaches the replay buffer.
Every answer is logged with the episode (its summary's `label`) and in labels.jsonl.

The terminal is read by one thread into a queue, so a scripted stdin (tests, a foot
pedal that types) works the same as a person typing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import ray

from sarl_dist.config import Config
from sarl_dist.core.replay import Batch
from sarl_dist.envs.robot import robot_client

SUCCESS_KEY = "s"
POLL_SECONDS = 0.1


class OperatorQuitError(Exception):
    """The person asked to stop (q), or the terminal closed."""


class Operator:
    def __init__(self, stream: IO[str] | None = None, out: IO[str] | None = None) -> None:
        self.out = out or sys.stderr
        self._lines: deque[str | None] = deque()
        self._cv = threading.Condition()
        threading.Thread(
            target=self._read, args=(stream or sys.stdin,), name="operator-stdin", daemon=True
        ).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cv:
                self._lines.append(line.strip().lower())
                self._cv.notify_all()
        with self._cv:
            self._lines.append(None)  # end of input
            self._cv.notify_all()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _next_line(self) -> str:
        with self._cv:
            while not self._lines:
                self._cv.wait(POLL_SECONDS)  # a short wait keeps Ctrl-C responsive
            line = self._lines.popleft()
        if line is None:
            raise OperatorQuitError("the terminal closed (end of input)")
        return line

    def confirm_reset(self, what: str) -> float:
        """Blocks until the person confirms the scene is reset; returns the time they did."""
        self.say(f"[{what}] reset the scene, then press Enter (q + Enter stops the run)")
        if self._next_line() == "q":
            raise OperatorQuitError("the person stopped the run")
        return time.time()

    def success_pending(self) -> bool:
        """Whether the next thing the person typed is the success key."""
        with self._cv:
            return bool(self._lines) and self._lines[0] == SUCCESS_KEY

    def success_now(self) -> bool:
        """Whether the person typed the success key (consumes it)."""
        with self._cv:
            if self._lines and self._lines[0] == SUCCESS_KEY:
                self._lines.popleft()
                return True
        return False

    def label(self, what: str, default: bool | None) -> bool:
        hint = {None: "y/n", True: "Y/n", False: "y/N"}[default]
        while True:
            self.say(f"[{what}] success? [{hint}]")
            line = self._next_line()
            if line in ("y", "yes", SUCCESS_KEY):
                return True
            if line in ("n", "no"):
                return False
            if line == "" and default is not None:
                return default
            self.say("answer y or n")


def relabel(batch: Batch, success: bool, bootstrap_on_timeout: bool) -> Batch:
    """The episode's transitions with its final reward from the person's label."""
    reward, done = batch.reward.copy(), batch.done.copy()
    reward[:] = 0.0
    reward[-1] = float(success)
    done[-1] = 1.0 if success or not bootstrap_on_timeout else 0.0
    return replace(batch, reward=reward, done=done)


def relabel_video(path: str, success: bool) -> str:
    """The worker named the video by what it saw; the person's label is the truth."""
    stem = path.removesuffix("-ok.mp4").removesuffix("-fail.mp4")
    target = f"{stem}-{'ok' if success else 'fail'}.mp4"
    if target != path and Path(path).exists():
        Path(path).replace(target)
    return target


class Attended:
    """Runs one robot episode at a time with the person (see the module docstring)."""

    def __init__(self, cfg: Config, operator: Operator, log: Callable[[dict], None]) -> None:
        self.cfg, self.operator, self.log = cfg, operator, log
        # Its own connection: stop and success marks must not queue behind a running step.
        self.control = robot_client(cfg.env, request_timeout=5.0)

    def run(self, job: tuple[int, int], greedy: bool, launch) -> tuple[dict, Any]:
        """`launch()` starts the episode on the robot's worker: (summary_ref, batch_ref).
        Returns the labelled summary and batch (None for evaluation), or raises RayError."""
        episode, _ = job
        what = f"eval episode {-1 - episode}" if greedy else f"episode {episode}"
        answers: dict[str, Any] = {"episode": episode, "greedy": greedy}
        answers["reset_confirmed_at"] = self.operator.confirm_reset(what)
        began = self.control.status()["episodes"]
        summary_ref, batch_ref = launch()
        self.operator.say(f"[{what}] running; {SUCCESS_KEY} + Enter marks success now")
        started = time.monotonic()
        while not ray.wait([summary_ref], timeout=POLL_SECONDS)[0]:
            if "success_now_at" not in answers and self._moving(began):
                self.control.mark_success()
                answers["success_now_at"] = round(time.monotonic() - started, 3)
                self.operator.say(f"[{what}] success marked; the arm stops")
        summary = ray.get(summary_ref)
        auto = summary["success"]  # a success mark or the classifier
        r = self.cfg.env.robot
        if r.ask_labels:
            default = auto if ("success_now_at" in answers or r.reward_classifier) else None
            success = self.operator.label(what, default)
            answers["source"] = "person"
        else:
            success = auto
            answers["source"] = "classifier"
        answers |= {"label": success, "labelled_at": time.time()}
        if "classifier_max" in summary:
            answers["classifier_max"] = summary["classifier_max"]
        summary["success"] = success
        summary["rewards"] = [0.0] * (len(summary["rewards"]) - 1) + [float(success)]
        summary["label"] = answers
        if "video" in summary:
            summary["video"] = relabel_video(summary["video"], success)
        self.log(answers)
        batch = None
        if not greedy:
            batch = relabel(ray.get(batch_ref), success, self.cfg.learner.bootstrap_on_timeout)
        return summary, batch

    def _moving(self, began: int) -> bool:
        """A success key counts once this episode's motion has begun (an earlier mark
        would be cleared by the episode's start); then it is consumed."""
        if not self.operator.success_pending():
            return False
        status = self.control.status()
        return status["episodes"] > began and status["steps"] > 0 and self.operator.success_now()

    def stop_arm(self) -> None:
        """Stop motion now, on a fresh connection (the usual one may be mid-command)."""
        client = robot_client(self.cfg.env, 5.0, 5.0)
        try:
            client.stop()
        finally:
            client.close()
