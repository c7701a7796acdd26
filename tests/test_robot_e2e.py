"""The real-robot mode end to end against a simulated robot: LIBERO-10 task 0 behind the
robot server on 127.0.0.1, the skill VLA served by the run over openpi's protocol, and
`sarl train` as a real subprocess whose stdin is the person (scripted answers)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sarl_dist.config import EnvConfig, LiberoConfig, RobotSafetyConfig
from sarl_dist.robot.client import RobotClient
from sarl_dist.testing import Person, write_demos

ROOT = Path(__file__).resolve().parents[1]
DEMO_PROMPTS = [
    "pick up the alphabet soup and put it in the basket",
    "pick up the tomato sauce and put it in the basket",
]


@pytest.fixture(scope="module")
def robot():
    """The simulated robot: LIBERO behind the robot server, in this process."""
    from sarl_dist.envs.sim_robot import SimRobot
    from sarl_dist.robot.safety import Safety
    from sarl_dist.robot.server import RobotServer

    backend = SimRobot(EnvConfig(kind="libero", task=0, libero=LiberoConfig(camera_size=64)))
    # The skill VLA opens the gripper with -1; this robot allows -0.5: every such action
    # is clipped.
    safety = Safety(RobotSafetyConfig(action_low=(-1, -1, -1, -1, -1, -1, -0.5)))
    server = RobotServer(backend, safety, port=0).start_background(60)
    client = RobotClient(f"ws://127.0.0.1:{server.port}", connect_timeout=10)
    yield server, client
    client.close()
    server.stop()
    backend.close()


def _config(tmp_path: Path, port: int, **train) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "robot_sim.yaml").read_text())
    cfg["env"] |= {"decision_steps": 1, "max_decisions": train.pop("steps", 12)}
    cfg["env"]["libero"]["camera_size"] = 64
    cfg["env"]["robot"]["address"] = f"ws://127.0.0.1:{port}"
    cfg["vlm"]["refresh_steps"] = 4
    cfg["q"] = {"ensemble": 2, "hidden": 32, "image_features": 16}
    cfg["learner"] = {"batch_size": 16, "warmup": 8, "updates_per_step": 0.5, "publish_every": 5}
    cfg["runtime"] |= {"worker_cpus": 0.5, "learner_cpus": 0.5, "vlm_cpus": 0.25}
    cfg["vla"]["server_cpus"] = 0.25
    cfg["train"] = {"episodes": 10, "checkpoint_every": 5} | train
    cfg["eval"] = {"every": 10, "episodes": 1}
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _sarl(*args: str, log: Path, stdin=subprocess.PIPE) -> subprocess.Popen:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sarl_dist.cli.main", "train", *args],
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            text=True,
            # A shell that runs the suite in the background hands its children SIGINT ignored,
            # and Python then installs no Ctrl-C handler; the person at a terminal has one.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


# The person's labels, in the order the run asks: evaluation at 0, training episodes 0-9
# (episode 3: "s" while it runs, then Enter takes the marked success), evaluation at 10.
LABELS = ["n", "n", "y", "n", "", "n", "n", "y", "n", "n", "y", "y"]


def _moving(client: RobotClient, began: int) -> bool:
    status = client.status()
    return status["episodes"] > began and status["steps"] > 0


def test_ten_labelled_episodes_write_the_run_directory(robot, tmp_path, caplog):
    server, client = robot
    demos = write_demos(tmp_path / "demos", DEMO_PROMPTS)
    config = _config(tmp_path, server.port, demos=str(demos))
    run = tmp_path / "run"
    log = tmp_path / "sarl.log"
    proc = _sarl(str(config), "--out", str(run), log=log)  # with its progress lines
    person = Person.of_process(proc, log)
    asked = []  # an evaluation episode that did not move is not asked about
    with caplog.at_level(logging.INFO, logger="sarl_dist.robot.server"):
        for i, label in enumerate(LABELS):
            began = client.status()["episodes"]
            person.answer("reset the scene, then type r + Enter", "r")
            if i == 4:  # training episode 3: the success key once it moves
                person.wait_for("running:")
                _wait(lambda began=began: _moving(client, began), 120, "episode 3 to move")
                person.type("s")
            asked.append(person.wait_for("success? [", "did not move") == "success? [")
            if asked[-1]:
                person.type(label)
                person.answer("Enter commits it", "")
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    output = log.read_text()
    assert all(asked[1:11])  # every training episode moved and was asked about

    labels = [json.loads(line) for line in (run / "labels.jsonl").read_text().splitlines()]
    want = [a in ("y", "") and ok for a, ok in zip(LABELS, asked, strict=True)]
    assert [r["label"] for r in labels] == want
    assert [r["source"] == "person" for r in labels] == asked
    assert [r["episode"] for r in labels] == [None, *range(10), None]
    assert [(r.get("eval_point"), r.get("eval_index")) for r in labels[::11]] == [(0, 0), (10, 0)]
    assert all(r["reset_confirmed_at"] > 0 for r in labels)
    assert "success_now_at" in labels[4] and "success_now_at" not in labels[5]

    episodes = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]
    assert [e["episode"] for e in episodes] == list(range(10))
    assert [e["success"] for e in episodes] == [r["label"] for r in labels[1:11]]
    assert all(e["rewards"][-1] == float(e["success"]) for e in episodes)
    assert all(e["label"]["label"] == e["success"] for e in episodes)
    assert episodes[3]["decisions"] < 12  # the success mark ended it early
    assert sum(e["clipped_actions"] for e in episodes) > 0
    event = next(ev for e in episodes for ev in e["clip_events"])
    assert event["reason"] == "action_bounds" and event["executed"][6] == -0.5
    evals = [json.loads(line) for line in (run / "eval_episodes.jsonl").read_text().splitlines()]
    assert [(e["eval_point"], e["eval_index"]) for e in evals] == [(0, 0), (10, 0)]
    assert all(e["steps"] > 0 and e["prompts"] for e in evals)  # with their steps and prompts

    # What the person saw: a live line per decision, why each episode ended, the clipping.
    assert re.search(r"\[episode 0\] decision \d+/12  step \d+ +\d+\.\d s  \w", output)
    assert "[episode 3] success marked" in output
    assert "[episode 3] ended by success mark after" in output
    assert "[episode 0] ended by all 12 decisions used (12 steps" in output
    assert "actions clipped by the robot's limits" in output
    assert "episode 0 done (1/10)" in output  # progress names episodes as the prompts do
    assert "Traceback" not in output and "WARNING" not in output
    logged = caplog.text  # the robot server's own log reads as the session
    assert logged.count("began (seed") == 12 and logged.count("ended after") == 12

    summary = json.loads((run / "summary.json").read_text())
    decisions = sum(e["decisions"] for e in episodes)
    assert summary["replay_size"] == decisions + 2 * len(DEMO_PROMPTS)  # the demos are in
    assert summary["vlm"]["requests"] < decisions / 2  # candidates refreshed every 4 steps
    cache = json.loads((run / "prompt_cache.json").read_text())
    assert set(DEMO_PROMPTS) <= set(cache["texts"])
    videos = sorted(p.name for p in (run / "videos").glob("*.mp4"))
    assert len(videos) == 12
    assert "train-00003-ok.mp4" in videos  # named as labelled
    assert client.status()["stopped"] is False


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_ctrl_c_stops_the_arm_checkpoints_and_the_run_resumes(robot, tmp_path):
    server, client = robot
    config = _config(tmp_path, server.port, steps=80, episodes=3, checkpoint_every=3)
    run, log = tmp_path / "run", tmp_path / "first.log"
    began = client.status()["episodes"]
    proc = _sarl(str(config), "--out", str(run), "--no-progress", log=log)
    person = Person.of_process(proc, log)
    for label in ("n", "n"):  # evaluation at 0, episode 0
        person.answer("reset the scene", "r")
        person.answer("success? [", label)
        person.answer("Enter commits it", "")
    person.answer("[episode 1] reset the scene", "r")
    _wait(
        lambda: (s := client.status())["episodes"] == began + 3 and s["steps"] > 20,
        300,
        "episode 1 to be moving",
    )
    proc.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    proc.wait(timeout=30)
    took = time.monotonic() - interrupted
    output = log.read_text()
    assert proc.returncode == 0, output[-3000:]
    print(f"Ctrl-C to exit 0: {took:.2f} s")
    assert took < 15, f"Ctrl-C took {took:.1f} s to exit"
    status = client.status()
    assert status["stopped"] is True
    steps_at_stop = status["steps"]
    assert "continue with: sarl train --resume" in output and "last_eval_success" in output
    assert '"wall_seconds": 0.0' not in output
    assert (run / "checkpoints" / "ep-0000001").is_dir()
    time.sleep(0.5)
    assert client.status()["steps"] == steps_at_stop  # nothing moves after the stop

    log = tmp_path / "resumed.log"
    proc = _sarl("--resume", str(run), "--no-progress", log=log)
    person = Person.of_process(proc, log)
    for label in ("y", "n", "y"):  # episodes 1 and 2, evaluation at 3
        person.answer("reset the scene", "r")
        person.answer("success? [", label)
        person.answer("Enter commits it", "")
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    episodes = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]
    assert [(e["episode"], e["success"]) for e in episodes] == [(0, False), (1, True), (2, False)]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["episodes"] == 3
    assert summary["decisions"] == sum(e["decisions"] for e in episodes)  # across the resume


def test_typed_ahead_keys_and_robot_server_restarts(tmp_path):
    """A "y" typed mid-episode and an extra Enter after a label answer nothing and move
    nothing; the robot server restarted while the trainer waits at a reset prompt, and
    again while an episode runs: the run goes on, and every episode is logged once."""
    from sarl_dist.envs.sim_robot import SimRobot
    from sarl_dist.robot.safety import Safety
    from sarl_dist.robot.server import RobotServer

    backend = SimRobot(EnvConfig(kind="libero", task=0, libero=LiberoConfig(camera_size=64)))
    safety = Safety(RobotSafetyConfig())
    server = RobotServer(backend, safety, port=0).start_background(60)
    port = server.port
    client = RobotClient(f"ws://127.0.0.1:{port}", connect_timeout=10)

    def restart() -> RobotClient:
        nonlocal server
        client.close()
        server.stop()
        server = RobotServer(backend, safety, port=port).start_background(60)
        return RobotClient(f"ws://127.0.0.1:{port}", connect_timeout=10)

    config = _config(tmp_path, port, steps=40, episodes=3, checkpoint_every=3)
    run, log = tmp_path / "run", tmp_path / "sarl.log"
    proc = _sarl(str(config), "--out", str(run), "--no-progress", log=log)
    person = Person.of_process(proc, log)
    try:
        person.answer("[eval 0/0] reset the scene", "r")  # evaluation at 0
        person.answer("success? [", "n")
        person.answer("Enter commits it", "")
        began = client.status()["episodes"]
        person.answer("[episode 0] reset the scene", "r")
        _wait(lambda: _moving(client, began), 120, "episode 0 to move")
        person.type("y")  # mid-episode: not an answer to anything yet
        person.wait_for("[episode 0] success? [y/n]")
        time.sleep(1.0)
        assert not (run / "labels.jsonl").read_text().count('"episode": 0')  # still asking
        person.type("n")
        person.answer("labelled FAILURE", "")
        person.type("")  # an extra Enter after the label
        person.wait_for("[episode 1] reset the scene")
        waiting = client.status()["episodes"]
        time.sleep(1.5)
        assert client.status()["episodes"] == waiting  # the arm did not start on it
        client = restart()  # while the trainer waits at the reset prompt
        person.type("r")
        person.wait_for("robot server restarted: reconnected")
        began = client.status()["episodes"]
        _wait(lambda: _moving(client, began), 120, "episode 1 to move")
        client = restart()  # while episode 1 runs
        person.wait_for("[episode 1] void: the robot server went away mid-episode")
        for what, label in (("episode 1", "y"), ("episode 2", "n")):
            person.answer(f"[{what}] reset the scene", "r", timeout=180)
            person.answer("success? [", label)
            person.answer("Enter commits it", "")
        person.answer("[eval 3/0] reset the scene", "r")  # greedy: it may only go home
        if person.wait_for("success? [", "did not move in this episode") == "success? [":
            person.type("n")
            person.answer("Enter commits it", "")
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        client.close()
        server.stop()
        backend.close()
    output = log.read_text()
    assert "Traceback" not in output
    episodes = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]
    assert [(e["episode"], e["success"]) for e in episodes] == [(0, False), (1, True), (2, False)]
    failures = [json.loads(line) for line in (run / "failures.jsonl").read_text().splitlines()]
    assert [(f["episode"], f["kind"]) for f in failures] == [(1, "robot_disconnect")]
