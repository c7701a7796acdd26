"""The person at the robot, and how a one-robot run's episodes go with them.

Each episode: the person resets the scene and types `r` + Enter (nothing moves before),
the arm goes home and the episode runs, one live line per decision (decision, steps,
elapsed time, the active prompt); `s` + Enter marks success at once (the arm stops
there), `f` + Enter ends it as a failure; then the person says whether it succeeded
and confirms the label (Enter commits it, `c` changes it), and the label is final: the
episode's last transition is relabelled with it before it reaches the replay buffer.
The terminal then says why the episode ended and how many actions the robot clipped.
An episode in which the arm did not move is not asked about: it failed.

Every prompt reads only what is typed after it appears (earlier input is flushed), so a
key typed early never answers a later question and no stray Enter starts the arm. Every
answer is logged with the episode (its summary's `label`) and in labels.jsonl;
evaluation episodes by their evaluation point and index.

The control connection (stop, marks, status) reconnects when the robot server restarts,
and says so; an episode the restart cut short is void and is run again.
"""

from __future__ import annotations

import shutil
import sys
import termios
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from sarl_dist.config import Config
from sarl_dist.core.interfaces import EnvSpec
from sarl_dist.core.replay import Batch
from sarl_dist.core.rollout import transition_done
from sarl_dist.envs import env_spec
from sarl_dist.envs.robot import robot_client
from sarl_dist.robot.client import RobotConnectionLostError, RobotError
from sarl_dist.runtime import compute

RESET_KEY, SUCCESS_KEY, FAIL_KEY, CHANGE_KEY, QUIT_KEY = "r", "s", "f", "c", "q"
POLL_SECONDS = 0.1
LIVE_SECONDS = 0.25  # how often the live line asks the worker where it is


class OperatorQuitError(Exception):
    """The person asked to stop (q), or the terminal closed."""


class Operator:
    """The terminal. One thread reads it into a queue (a person, or a script typing into a
    pipe, the same way); every prompt first drops what was typed before it appeared."""

    def __init__(self, stream: IO[str] | None = None, out: IO[str] | None = None) -> None:
        stream = stream or sys.stdin
        self.out = out or sys.stderr
        self._tty = stream.fileno() if _isatty(stream) else None
        self._live = False  # a live line is on the screen, unfinished
        self._lines: deque[str | None] = deque()
        self._cv = threading.Condition()
        threading.Thread(
            target=self._read, args=(stream,), name="operator-stdin", daemon=True
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
        if self._live:
            print(file=self.out)
            self._live = False
        print(text, file=self.out, flush=True)

    def live(self, text: str) -> None:
        """A line that the next one replaces, on a terminal (elsewhere: a line each)."""
        if self._tty is None:
            print(text, file=self.out, flush=True)
            return
        width = shutil.get_terminal_size().columns - 1  # a wrapped line would not be replaced
        print(f"\r{text[:width]:<{width}}", end="", file=self.out, flush=True)
        self._live = True

    def _flush(self) -> None:
        """Drop what was typed before now (the end of input stays: it still means quit)."""
        if self._tty is not None:
            termios.tcflush(self._tty, termios.TCIFLUSH)
        with self._cv:
            ended = None in self._lines
            self._lines.clear()
            if ended:
                self._lines.append(None)

    def ask(self, text: str) -> str:
        """Show `text` and return the first line typed after it."""
        self._flush()
        self.say(text)
        with self._cv:
            while not self._lines:
                self._cv.wait(POLL_SECONDS)  # a short wait keeps Ctrl-C responsive
            line = self._lines.popleft()
        if line is None:
            raise OperatorQuitError("the terminal closed (end of input)")
        return line

    def confirm_reset(self, what: str) -> float:
        """Block until the person types the reset key; returns when they did."""
        line = self.ask(
            f"[{what}] reset the scene, then type {RESET_KEY} + Enter "
            f"({QUIT_KEY} + Enter stops the run)"
        )
        while line != RESET_KEY:
            if line == QUIT_KEY:
                raise OperatorQuitError("the person stopped the run")
            line = self.ask(
                f"[{what}] type {RESET_KEY} + Enter once the scene is reset, or "
                f"{QUIT_KEY} + Enter to stop"
            )
        self.say(f"[{what}] reset confirmed: the arm moves")
        return time.time()

    def watch(self, what: str) -> None:
        """From now on, keys typed during the episode count (earlier ones are dropped)."""
        self._flush()
        self.say(
            f"[{what}] running: {SUCCESS_KEY} + Enter marks success now, {FAIL_KEY} + Enter "
            "ends it as a failure"
        )

    def key(self) -> str | None:
        """A key typed since `watch` (consumed), if any."""
        with self._cv:
            if self._lines and self._lines[0] is not None:
                return self._lines.popleft()
        return None

    def label(self, what: str, default: bool | None) -> bool:
        """The person's verdict, confirmed before it counts (Enter commits, c changes it)."""
        hint = {None: "y/n", True: "Y/n", False: "y/N"}[default]
        while True:
            line = self.ask(f"[{what}] success? [{hint}]")
            if line in ("y", "yes", "n", "no") or (line == "" and default is not None):
                success = line.startswith("y") if line else bool(default)
                word = "SUCCESS" if success else "FAILURE"
                confirm = self.ask(
                    f"[{what}] labelled {word}: Enter commits it, {CHANGE_KEY} + Enter changes it"
                )
                if confirm == "":
                    return success
                if confirm != CHANGE_KEY:
                    self.say(f"[{what}] not committed; answer again")
            else:
                self.say("answer y or n")


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def relabel(batch: Batch, success: bool, spec: EnvSpec) -> Batch:
    """The episode's transitions with its final reward from the person's label: a success
    terminates; a failure is the episode cut short (the rollout's termination contract)."""
    reward, done = batch.reward.copy(), batch.done.copy()
    reward[:] = 0.0
    reward[-1] = float(success)
    done[-1] = float(transition_done(success, not success, spec))
    return replace(batch, reward=reward, done=done)


def relabel_video(path: str, success: bool) -> str:
    """The worker named the video by what it saw; the person's label is the truth."""
    stem = path.removesuffix("-ok.mp4").removesuffix("-fail.mp4")
    target = f"{stem}-{'ok' if success else 'fail'}.mp4"
    if target != path and Path(path).exists():
        Path(path).replace(target)
    return target


def describe_end(summary: dict, answers: dict) -> str:
    """Why an episode ended, in the person's words."""
    if "failed_now_at" in answers:
        return f"failure key after {answers['failed_now_at']:.1f} s"
    if "success_now_at" in answers:
        return f"success mark after {answers['success_now_at']:.1f} s"
    ended = summary.get("ended_by", "")
    if ended == "truncated":
        if summary.get("timed_out"):
            return "the episode's time cap (safety.max_episode_seconds)"
        return "a stop on the robot side"
    if ended == "success":
        return "success (reward classifier)" if "classifier_max" in summary else "success"
    return f"all {summary['decisions']} decisions used"


class Attended:
    """Runs one robot episode at a time with the person (see the module docstring)."""

    def __init__(self, cfg: Config, operator: Operator, log: Callable[[dict], None]) -> None:
        self.cfg, self.operator, self.log = cfg, operator, log
        self.spec = env_spec(cfg)
        # Its own connection: stop and success marks must not queue behind a running step.
        self.control = robot_client(cfg.env, request_timeout=5.0)

    def _control(self, cmd: str, **fields: Any) -> dict:
        """A control command, reconnecting once when the robot server has restarted."""
        try:
            return getattr(self.control, cmd)(**fields)
        except RobotConnectionLostError:
            self.operator.say("the robot server connection was lost; reconnecting ...")
            self.control.close()
            self.control = robot_client(self.cfg.env, request_timeout=5.0)
            self.operator.say("robot server restarted: reconnected")
            return getattr(self.control, cmd)(**fields)

    def run(
        self, job: tuple[int, int], greedy: bool, launch, live, eval_point: int | None = None
    ) -> tuple[dict, Any]:
        """`launch()` starts the episode on the robot's worker: (summary_ref, batch_ref);
        `live()` asks the worker where the episode is. Returns the labelled summary and
        batch (None for evaluation), or raises RayError."""
        episode, _ = job
        what = f"eval {eval_point}/{-1 - episode}" if greedy else f"episode {episode}"
        answers: dict[str, Any] = {"episode": None if greedy else episode, "greedy": greedy}
        if greedy:
            answers |= {"eval_point": eval_point, "eval_index": -1 - episode}
        answers["reset_confirmed_at"] = self.operator.confirm_reset(what)
        began = self._control("status")["episodes"]
        summary_ref, batch_ref = launch()
        self.operator.watch(what)
        self._follow(what, summary_ref, began, answers, live)
        summary = compute.get(summary_ref)
        clipped, ended = summary.get("clipped_actions", 0), describe_end(summary, answers)
        self.operator.say(
            f"[{what}] ended by {ended} ({summary['steps']} steps"
            + (f", {clipped} actions clipped by the robot's limits)" if clipped else ")")
        )
        success = self._verdict(what, summary, answers)
        answers |= {"label": success, "labelled_at": time.time()}
        if "classifier_max" in summary:
            answers["classifier_max"] = summary["classifier_max"]
        summary["success"] = success
        summary["rewards"] = [0.0] * (len(summary["rewards"]) - 1) + [float(success)]
        summary["label"] = answers
        if "video" in summary:
            summary["video"] = relabel_video(summary["video"], success)
        self.log(answers)
        self._control("end_episode", success=success, reason=ended)
        batch = None
        if not greedy:
            batch = relabel(compute.get(batch_ref), success, self.spec)
        return summary, batch

    def _follow(self, what: str, summary_ref, began: int, answers: dict, live) -> None:
        """While the episode runs: the live line, and the success and failure keys (which
        count only once this episode's motion has begun)."""
        started, polled, shown = time.monotonic(), 0.0, None
        while not compute.wait([summary_ref], timeout=POLL_SECONDS)[0]:
            now = time.monotonic()
            if now - polled >= LIVE_SECONDS:
                polled, where = now, compute.get(live())
                if where and where != shown:
                    shown = where
                    self.operator.live(
                        f"[{what}] decision {where['decision'] + 1}/{where['decisions']}  "
                        f"step {where['steps']}  {now - started:5.1f} s  {where['prompt']}"
                    )
            key = self.operator.key()
            if key not in (SUCCESS_KEY, FAIL_KEY) or {"success_now_at", "failed_now_at"} & set(
                answers
            ):
                continue
            status = self._control("status")
            if status["episodes"] <= began or status["steps"] == 0:
                continue  # before this episode moved: the key does not count
            at = round(time.monotonic() - started, 3)
            if key == SUCCESS_KEY:
                self._control("mark_success")
                answers["success_now_at"] = at
                self.operator.say(f"[{what}] success marked; the arm stops")
            else:
                self._control("stop")
                answers["failed_now_at"] = at
                self.operator.say(f"[{what}] failure key: the arm stops, the episode failed")

    def _verdict(self, what: str, summary: dict, answers: dict) -> bool:
        """The episode's final success: the person's confirmed label, unless nothing moved
        or the failure key ended it (then it failed, and nobody is asked)."""
        if not summary.get("moved", True):
            answers["source"] = "no_motion"
            self.operator.say(f"[{what}] the arm did not move in this episode: it failed")
            return False
        if "failed_now_at" in answers:
            answers["source"] = "failure_key"
            return False
        r = self.cfg.env.robot
        auto = summary["success"]  # a success mark or the classifier
        if not r.ask_labels:
            answers["source"] = "classifier"
            return auto
        answers["source"] = "person"
        default = auto if ("success_now_at" in answers or r.reward_classifier) else None
        return self.operator.label(what, default)

    def lost(self, what: str, exc: BaseException, cause: str) -> None:
        """The episode in progress failed: say so, and whether the robot server is back."""
        if isinstance(exc, RobotConnectionLostError):
            self.operator.say(
                f"[{what}] void: the robot server went away mid-episode; it will be run again"
            )
        else:
            self.operator.say(f"[{what}] void ({cause}); it will be run again")
        try:
            self._control("status")
        except RobotError as error:
            self.operator.say(f"the robot server is not back yet ({error})")

    def stop_arm(self) -> None:
        """Stop motion now, on a fresh connection (the usual one may be mid-command)."""
        client = robot_client(self.cfg.env, 5.0, 5.0)
        try:
            client.stop()
        finally:
            client.close()
