"""The robot server over real websockets on 127.0.0.1, with LIBERO standing in for the arm:
safety limits, stop and success marks from a second connection while a chunk runs,
the dead-man on a dropped connection, bad requests, API keys and unreachable servers."""

import contextlib
import logging
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from openpi_client import msgpack_numpy
from typer.testing import CliRunner
from websockets.sync.client import connect

from sarl_dist.cli.main import app
from sarl_dist.config import RobotSafetyConfig
from sarl_dist.envs.sim_robot import SimRobot
from sarl_dist.robot.backends import BackendError, GymRobot, load_backend
from sarl_dist.robot.client import RobotClient, RobotConnectionLostError, RobotError
from sarl_dist.robot.safety import Safety
from sarl_dist.robot.server import RobotServer
from sarl_dist.testing import tiny_config

HOLD = np.array([0, 0, 0, 0, 0, 0, -1], np.float32)  # gripper open, no motion
UP = np.array([0, 0, 0.5, 0, 0, 0, -1], np.float32)
KEY, WRONG = "planted-robot-key-5b1e", "planted-wrong-key-0c3d"


@pytest.fixture(scope="module")
def sim():
    cfg = tiny_config("env.kind=libero", "env.libero.camera_size=64", "env.libero.settle_steps=2")
    robot = SimRobot(cfg.env)
    server = RobotServer(robot, Safety(cfg.env.robot.safety), port=0).start_background()
    yield server
    server.stop()
    robot.close()


def _client(server: RobotServer, **kw) -> RobotClient:
    return RobotClient(f"ws://127.0.0.1:{server.port}", **{"connect_timeout": 5.0, **kw})


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def _execute_in_thread(client: RobotClient, actions: np.ndarray) -> tuple[threading.Thread, dict]:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(client.execute(actions)))
    thread.start()
    return thread, result


def test_metadata_episode_and_a_chunk_moves_the_arm(sim):
    with contextlib.closing(_client(sim)) as robot:
        meta = robot.metadata
        assert meta["robot"] == "libero:libero_10/0" and meta["action_dim"] == 7
        assert meta["cameras"] == ["primary", "wrist"] and meta["state_dim"] == 8
        assert meta["limits"]["max_chunk"] == 50 and meta["limits"]["action_high"] == [1.0] * 7
        start = robot.begin_episode(0)
        assert (start["steps"], start["stopped"], start["success"]) == (0, False, False)
        obs = start["observation"]
        for camera in ("primary", "wrist"):
            assert obs["images"][camera].shape == (64, 64, 3)
            assert obs["images"][camera].dtype == np.uint8
        assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
        assert np.array_equal(obs["eef_pos"], obs["state"][:3])
        assert "objects" in obs["extra"]["privileged"] and obs["extra"]["sim_success"] is False
        moved = robot.execute(np.tile(UP, (5, 1)))
        assert moved["steps"] == 5 and moved["clipped"] == [] and not moved["stopped"]
        assert moved["observation"]["images"]["primary"].shape == (64, 64, 3)
        assert moved["observation"]["eef_pos"][2] > obs["eef_pos"][2] + 0.005  # it rose
        home = robot.home(200)
        assert 0 < home["steps"] < 200
        assert np.linalg.norm(home["observation"]["eef_pos"] - obs["eef_pos"]) < 0.02
        assert robot.status()["steps"] == 5 + home["steps"]
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.port}/healthz", timeout=5) as resp:
        assert resp.status == 200


def test_an_action_out_of_bounds_is_clipped_reported_and_logged(sim, caplog):
    with contextlib.closing(_client(sim)) as robot:
        robot.begin_episode(1)
        clipped_before = robot.status()["clipped"]
        wild = np.array([[2.0, 0, 0, 0, 0, 0, -1], HOLD], np.float32)
        with caplog.at_level(logging.WARNING, logger="sarl_dist.robot.server"):
            reply = robot.execute(wild)
        assert reply["steps"] == 2
        (event,) = reply["clipped"]
        assert event["reason"] == "action_bounds" and event["dims"] == [0]
        assert event["step"] == 0 and event["action"][0] == 2.0 and event["executed"][0] == 1.0
        assert robot.status()["clipped"] == clipped_before + 1
    assert any(
        r.name == "sarl_dist.robot.server" and "action_bounds" in r.getMessage()
        for r in caplog.records
    )


def test_the_workspace_zeroes_only_motion_further_out():
    safety = Safety(RobotSafetyConfig(workspace_low=(0, 0, 0), workspace_high=(1, 1, 1)))
    push = np.array([-0.5, 0.5, 0.5, 0.1, 0, 0, 1], np.float32)
    out, events = safety.apply(push, np.array([0.0, 0.5, 1.2]), step=7)  # x at low, z above
    assert out.tolist() == pytest.approx([0, 0.5, 0, 0.1, 0, 0, 1])
    assert [(e["reason"], e["dims"], e["step"]) for e in events] == [("workspace", [0, 2], 7)]
    back = np.array([0.5, 0, -0.5, 0, 0, 0, 1], np.float32)  # moving back inside is allowed
    assert safety.apply(back, np.array([0.0, 0.5, 1.2]), 8) == (pytest.approx(back), [])
    with pytest.raises(ValueError, match="non-finite"):
        safety.apply(np.full(7, np.nan), np.zeros(3), 0)


def test_at_the_workspace_boundary_the_sim_arm_does_not_push_out(sim, monkeypatch):
    with contextlib.closing(_client(sim)) as robot:
        z = robot.begin_episode(2)["observation"]["eef_pos"][2]
        ceiling = RobotSafetyConfig(workspace_high=(10.0, 10.0, float(z) - 0.01))
        monkeypatch.setattr(sim, "safety", Safety(ceiling))
        reply = robot.execute(np.tile(UP, (3, 1)))
        assert [e["dims"] for e in reply["clipped"]] == [[2]] * 3
        assert [e["executed"][2] for e in reply["clipped"]] == [0.0] * 3
        assert reply["observation"]["eef_pos"][2] < z + 0.003  # held, not risen


def test_stop_from_a_second_client_ends_a_running_chunk(sim):
    with contextlib.closing(_client(sim)) as robot, contextlib.closing(_client(sim)) as panel:
        episodes = panel.status()["episodes"]
        robot.begin_episode(3)
        stops = panel.status()["stops"]
        assert panel.status()["episodes"] == episodes + 1
        thread, result = _execute_in_thread(robot, np.tile(HOLD, (50, 1)))
        _wait_for(lambda: panel.status()["steps"] >= 3)
        assert panel.stop() == {"stopped": True}
        thread.join(30)
        assert result["stopped"] and 3 <= result["steps"] < 50
        assert panel.status()["stops"] == stops + 1
        after = robot.execute(HOLD[None])
        assert (after["steps"], after["stopped"]) == (0, True)  # nothing moves while stopped
        assert (robot.home(50)["steps"], robot.status()["stopped"]) == (0, True)
        again = robot.begin_episode(4)
        assert not again["stopped"] and robot.execute(HOLD[None])["steps"] == 1


def test_a_success_mark_ends_the_chunk_and_a_new_episode_clears_it(sim):
    with contextlib.closing(_client(sim)) as robot, contextlib.closing(_client(sim)) as panel:
        robot.begin_episode(5)
        thread, result = _execute_in_thread(robot, np.tile(HOLD, (50, 1)))
        _wait_for(lambda: panel.status()["steps"] >= 2)
        assert panel.mark_success() == {"success": True}
        thread.join(30)
        assert result["success"] and not result["stopped"] and result["steps"] < 50
        assert robot.begin_episode(6)["success"] is False
        assert robot.execute(HOLD[None])["steps"] == 1


def test_the_episode_wall_clock_cap_stops_the_arm(sim, monkeypatch):
    with contextlib.closing(_client(sim)) as robot:
        robot.begin_episode(7)
        monkeypatch.setattr(sim, "safety", Safety(RobotSafetyConfig(max_episode_seconds=0.01)))
        time.sleep(0.05)
        reply = robot.execute(HOLD[None])
        assert (reply["steps"], reply["stopped"]) == (0, True)


def test_bad_requests_get_errors_and_the_server_keeps_serving(sim):
    bad = [
        "not msgpack, a text frame",
        b"\xc1",  # a byte msgpack never uses
        msgpack_numpy.packb([1, 2]),
        msgpack_numpy.packb({"cmd": "dance"}),
        msgpack_numpy.packb({"cmd": "execute"}),
        msgpack_numpy.packb({"cmd": "execute", "actions": np.zeros((5, 6), np.float32)}),
        msgpack_numpy.packb({"cmd": "execute", "actions": np.zeros((51, 7), np.float32)}),
        msgpack_numpy.packb({"cmd": "execute", "actions": np.full((2, 7), np.nan, np.float32)}),
        msgpack_numpy.packb({"cmd": "execute", "actions": "fast"}),
        msgpack_numpy.packb({"cmd": "begin_episode", "seed": "zero"}),
        msgpack_numpy.packb({"cmd": "home", "max_steps": -1}),
    ]
    with connect(f"ws://127.0.0.1:{sim.port}") as ws:
        ws.recv(timeout=5)  # metadata
        for frame in bad:
            ws.send(frame)
            reply = msgpack_numpy.unpackb(ws.recv(timeout=5))
            assert set(reply) == {"error"}, (frame, reply)
        ws.send(msgpack_numpy.packb({"cmd": "status"}))
        assert "stopped" in msgpack_numpy.unpackb(ws.recv(timeout=5))
    with contextlib.closing(_client(sim)) as robot:
        robot.begin_episode(8)
        with pytest.raises(RobotError, match=r"robot server ws://.*1 <= n <= 50"):
            robot.execute(np.zeros((51, 7)))
        assert robot.execute(HOLD[None])["steps"] == 1  # same connection, still served


def test_no_motion_before_the_first_episode(sim):
    fresh = RobotServer(sim.backend, sim.safety, port=0).start_background()
    try:
        with contextlib.closing(_client(fresh)) as robot:
            with pytest.raises(RobotError, match="begin_episode first"):
                robot.execute(HOLD[None])
            with pytest.raises(RobotError, match="begin_episode first"):
                robot.home(10)
    finally:
        fresh.stop()


def test_a_wrong_key_is_refused_at_once_and_never_echoed(sim, caplog):
    keyed = RobotServer(sim.backend, sim.safety, port=0, api_key=KEY).start_background()
    try:
        start = time.monotonic()
        with caplog.at_level(logging.DEBUG), pytest.raises(RobotError) as refused:
            _client(keyed, api_key=WRONG, connect_timeout=10.0)
        assert time.monotonic() - start < 3.0
        assert "refused the API key (401)" in str(refused.value)
        for key in (KEY, WRONG):
            assert key not in str(refused.value) and key not in caplog.text
        with contextlib.closing(_client(keyed, api_key=KEY)) as robot:
            assert robot.status()["connections"] == 1
    finally:
        keyed.stop()


def test_no_server_fails_by_the_deadline_not_a_hang():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(RobotError, match=f"no robot server at ws://127.0.0.1:{port}"):
        RobotClient(f"ws://127.0.0.1:{port}", connect_timeout=0.5)
    assert time.monotonic() - start < 3.0


def test_a_connection_dropped_mid_execute_stops_the_arm(sim):
    with contextlib.closing(_client(sim)) as panel:
        panel.begin_episode(9)
        with connect(f"ws://127.0.0.1:{sim.port}") as ws:
            ws.recv(timeout=5)
            ws.send(msgpack_numpy.packb({"cmd": "execute", "actions": np.tile(HOLD, (50, 1))}))
            _wait_for(lambda: panel.status()["steps"] >= 2)
        _wait_for(lambda: panel.status()["stopped"])
        assert panel.status()["steps"] < 50
        # A client that stops waiting closes its connection: the same dead-man.
        panel.begin_episode(10)
        impatient = _client(sim, request_timeout=0.05)
        with pytest.raises(RobotError, match="no reply within"):
            impatient.execute(np.tile(HOLD, (50, 1)))
        _wait_for(lambda: panel.status()["stopped"])
        assert panel.status()["steps"] < 50
        with pytest.raises(RobotConnectionLostError):
            impatient.status()


def test_a_gym_style_arm_behind_the_server():
    robot = load_backend("sarl_dist.testing:fake_gym_arm", tiny_config().env)
    assert isinstance(robot, GymRobot) and robot.cameras == ("primary", "wrist")
    server = RobotServer(robot, Safety(RobotSafetyConfig()), port=0).start_background()
    try:
        with contextlib.closing(_client(server)) as client:
            assert client.metadata["robot"] == "FakeGymArm" and client.metadata["state_dim"] == 7
            client.begin_episode(0)
            reply = client.execute(np.tile(UP, (4, 1)))
            assert reply["observation"]["eef_pos"].tolist() == pytest.approx([0, 0, 0.02])
            assert reply["observation"]["images"]["wrist"][0, 0].tolist() == [200] * 3
            assert client.home(10)["observation"]["eef_pos"].tolist() == [0, 0, 0]
            client.stop()
            assert robot.env.stops == 1
            client.begin_episode(1)
            robot.env.step = lambda action: 1 / 0  # the arm faults mid-chunk
            with pytest.raises(RobotError, match="robot failed, arm stopped: ZeroDivisionError"):
                client.execute(np.tile(UP, (4, 1)))
            assert client.status()["stopped"] and robot.env.stops == 2
    finally:
        server.stop()


def test_backend_specs_fail_clearly():
    env = tiny_config().env
    with pytest.raises(BackendError, match=r"'nowhere_such:make'.*No module named"):
        load_backend("nowhere_such:make", env)
    with pytest.raises(BackendError, match=r"'widowx'.*module:factory"):
        load_backend("widowx", env)
    with pytest.raises(BackendError, match="neither a RobotBackend nor a gym-style env"):
        load_backend("builtins:str", env)
    result = CliRunner().invoke(app, ["robot-server", "--backend", "nowhere_such:make"])
    assert result.exit_code == 2 and "nowhere_such:make" in result.output
