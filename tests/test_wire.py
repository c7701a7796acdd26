"""The msgpack-numpy perimeter of every server and client: frames that would crash
openpi's decoder (an object array with made-up pointers segfaults the reader), refused
by `wire.unpack`; a fuzz of random and adversarial frames against the policy server and
the robot server, in process and as the `sarl` processes a user starts; and clients that
refuse the same from a hostile server."""

import contextlib
import subprocess
import sys
import time
import urllib.request

import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy
from websockets.sync.client import connect

from sarl_dist import wire
from sarl_dist.robot.backends import load_backend
from sarl_dist.robot.client import RobotClient, RobotError
from sarl_dist.robot.safety import Safety
from sarl_dist.robot.server import RobotServer
from sarl_dist.skill_chain import NUM_SKILLS
from sarl_dist.testing import free_ports, tiny_config, wait_healthy, websocket_server
from sarl_dist.vla import make_server_policy
from sarl_dist.vla.base import VLAError
from sarl_dist.vla.client import WebsocketVLA
from sarl_dist.vla.server import PolicyServer

OBS = {"observation/state": np.zeros(8, np.float32), "prompt": "open the drawer"}
# What the skill VLA needs to answer (it holds still: no scene, no objects).
SKILL_OBS = {
    **OBS,
    "privileged": {
        "scene": "",
        "objects": {},
        "sites": {},
        "site_extents": {},
        "joints": {},
        "eef_quat": np.array([1.0, 0, 0, 0], np.float32),
        "gripper_qvel": np.zeros(2, np.float32),
    },
}


def _array(dtype: str, data: bytes, shape) -> dict:
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


POINTER = (0xDEADBEEF).to_bytes(8, "little")
# The reported crash: ~80 bytes, observation/state an object array of a made-up pointer.
OBJECT_FRAME = msgpack.packb({"observation/state": _array("|O", POINTER, [1]), "prompt": "x"})
ADVERSARIAL = {
    "object dtype": OBJECT_FRAME,
    "void dtype": msgpack.packb({"a": _array("V8", POINTER, [1])}),
    "structured dtype": msgpack.packb({"a": _array("i4,O", POINTER * 2, [1])}),
    "structured list dtype": msgpack.packb({"a": _array("[('p', '|O')]", POINTER, [1])}),
    "datetime dtype": msgpack.packb({"a": _array("<M8[s]", POINTER, [1])}),
    "bytes dtype": msgpack.packb({"a": _array("|S8", POINTER, [1])}),
    "complex dtype": msgpack.packb({"a": _array("<c8", POINTER, [1])}),
    "huge shape": msgpack.packb({"a": _array("<f4", b"", [0, 1 << 40])}),
    "negative shape": msgpack.packb({"a": _array("<f4", POINTER, [-2])}),
    "too many dims": msgpack.packb({"a": _array("|u1", b"\0", [1] * 40)}),
    "buffer too short": msgpack.packb({"a": _array("<f8", POINTER, [224, 224, 3])}),
    "buffer too long": msgpack.packb({"a": _array("|u1", POINTER, [2])}),
    "shape not a list": msgpack.packb({"a": _array("|u1", POINTER, 8)}),
    "data not bytes": msgpack.packb({"a": _array("|u1", "abcdefgh", [8])}),
    "object scalar": msgpack.packb({"a": {b"__npgeneric__": True, b"data": 1, b"dtype": "|O"}}),
    "scalar of a string": msgpack.packb(
        {"a": {b"__npgeneric__": True, b"data": "1", b"dtype": "<f4"}}
    ),
    "deep nesting": b"\x91" * 200 + b"\xc0",
    "very deep nesting": b"\x81\xa1a" * 5000 + b"\xc0",
    "truncated": msgpack_numpy.packb(OBS)[:-5],
    "trailing bytes": msgpack_numpy.packb(OBS) + b"\x00",
    "extension type": msgpack.packb({"a": msgpack.ExtType(7, POINTER)}),
    "timestamp": msgpack.packb({"a": msgpack.Timestamp(1, 2)}),
    "integer map key": msgpack.packb({1: "x"}),
    "invalid utf-8": b"\x81\xa1a\xa2\xff\xfe",
    "empty": b"",
}
DTYPES = ["|O", "V4", "<c8", "i4,O", "|S3", "<U2", "<M8[s]", "<f4", "|b1", ">i8", "<f16",
          "f1", "|u1", "<i2", "O", "", "<f8", "x"]  # fmt: skip


def _random_value(rng: np.random.Generator, depth: int = 0):
    kind = rng.integers(0, 9 if depth < 4 else 5)
    if kind == 0:
        return int(rng.integers(-(2**40), 2**40))
    if kind == 1:
        return float(rng.normal())
    if kind == 2:
        return rng.bytes(int(rng.integers(0, 16)))
    if kind == 3:
        return "".join(chr(int(c)) for c in rng.integers(32, 126, int(rng.integers(0, 8))))
    if kind == 4:
        return None
    if kind in (5, 6):
        shape = [int(d) for d in rng.integers(-3, 6, int(rng.integers(0, 4)))]
        size = int(rng.integers(0, 64))
        return _array(str(rng.choice(DTYPES)), rng.bytes(size), shape)
    if kind == 7:
        return [_random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    return {f"k{i}": _random_value(rng, depth + 1) for i in range(int(rng.integers(0, 4)))}


def fuzz_frames(seed: int = 0, count: int = 300) -> list[bytes]:
    """Random frames: random structures of arrays of every dtype and shape, random bytes,
    and valid requests with bytes flipped or cut."""
    rng = np.random.default_rng(seed)
    valid = [msgpack_numpy.packb(OBS), msgpack_numpy.packb({"cmd": "execute",
             "actions": np.zeros((2, 7), np.float32)})]  # fmt: skip
    frames = []
    for i in range(count):
        if i % 3 == 0:
            frames.append(msgpack.packb(_random_value(rng)))
        elif i % 3 == 1:
            frames.append(rng.bytes(int(rng.integers(1, 200))))
        else:
            frame = bytearray(valid[i % 2])
            for pos in rng.integers(0, len(frame), int(rng.integers(1, 6))):
                frame[pos] = int(rng.integers(0, 256))
            frames.append(bytes(frame[: int(rng.integers(1, len(frame) + 1))]))
    return frames


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_frames_are_refused_by_the_reader(name):
    with pytest.raises(wire.WireError):
        wire.unpack(ADVERSARIAL[name])


PLAIN = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
         "float16", "float32", "float64"]  # fmt: skip


def test_openpi_frames_round_trip_with_every_plain_dtype():
    values = {dt: (np.arange(6) % 2).astype(dt).reshape(2, 3) for dt in PLAIN}
    message = {
        **values,
        "big_endian": np.arange(3, dtype=">f4"),
        "scalar": np.float32(2.5),
        "nested": {"list": [1, 2.5, None, True, b"raw", "text"]},
        "empty": np.zeros((0, 7)),
    }
    frame = msgpack_numpy.packb(message)
    assert wire.pack(message) == frame  # openpi's own encoding, byte for byte
    decoded = wire.unpack(frame)
    for key, value in {**values, "big_endian": message["big_endian"]}.items():
        assert decoded[key].dtype == value.dtype and np.array_equal(decoded[key], value)
    assert decoded["scalar"] == np.float32(2.5) and decoded["empty"].shape == (0, 7)
    assert decoded["nested"] == {"list": [1, 2.5, None, True, b"raw", "text"]}
    with pytest.raises(TypeError, match="dtype object"):
        wire.pack({"a": np.array([object()])})


def _healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
        return reply.status


def _policy_reply(port: int, frame: bytes) -> bytes | str:
    """One frame to a policy server on a fresh connection: its reply (bytes) or error (text)."""
    with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
        ws.recv(timeout=5)  # metadata
        ws.send(frame)
        return ws.recv(timeout=5)


@pytest.fixture
def policy_server():
    policy, metadata = make_server_policy("skill_chain", tiny_config())
    server = PolicyServer(policy, port=0, metadata=metadata).start_background()
    yield server
    server.stop()


@pytest.fixture
def robot_server():
    cfg = tiny_config()
    robot = load_backend("sarl_dist.testing:fake_gym_arm", cfg.env)
    server = RobotServer(robot, Safety(cfg.env.robot.safety), port=0).start_background()
    yield server
    server.stop()


def test_the_policy_server_survives_a_fuzz_and_answers_the_next_good_client(policy_server):
    port = policy_server.port
    for name, frame in ADVERSARIAL.items():
        reply = _policy_reply(port, frame)
        assert isinstance(reply, str), name  # openpi's error: a text frame, then closed
    for frame in fuzz_frames():
        _policy_reply(port, frame)  # a reply or an error, never a crash or a hang
    assert _healthz(port) == 200
    client = WebsocketVLA("127.0.0.1", port, connect_timeout=2)
    assert client.infer(OBS)["actions"].shape == (10, NUM_SKILLS)
    client.close()


def test_the_robot_server_survives_a_fuzz_on_one_connection(robot_server):
    port = robot_server.port
    with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
        ws.recv(timeout=5)
        for frame in [*ADVERSARIAL.values(), *fuzz_frames(seed=1)]:
            ws.send(frame)
            reply = wire.unpack(ws.recv(timeout=5))
            assert "error" in reply  # refused, and the connection stays open
    assert _healthz(port) == 200
    client = RobotClient(f"ws://127.0.0.1:{port}", connect_timeout=2)
    assert client.begin_episode(0)["steps"] == 0
    assert client.execute(np.zeros((3, 7), np.float32))["steps"] == 3
    client.close()


@contextlib.contextmanager
def _sarl_process(*args: str):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sarl_dist.cli.main", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_object_frame_against_the_sarl_server_processes():
    vla_port, robot_port = free_ports(2)
    with (
        _sarl_process("serve-vla", "--port", str(vla_port)) as vla,  # the skill VLA
        _sarl_process(
            "robot-server", "--backend", "sarl_dist.testing:fake_gym_arm", "--port", str(robot_port)
        ) as robot,  # fmt: skip
    ):
        wait_healthy(vla_port, vla)
        wait_healthy(robot_port, robot)
        error = _policy_reply(vla_port, OBJECT_FRAME)
        assert isinstance(error, str) and "dtype '|O' refused" in error
        with connect(f"ws://127.0.0.1:{robot_port}") as ws:
            ws.recv(timeout=5)
            ws.send(msgpack.packb({"cmd": "execute", "actions": _array("|O", POINTER, [1])}))
            assert "dtype '|O' refused" in wire.unpack(ws.recv(timeout=5))["error"]
        assert vla.poll() is None and robot.poll() is None  # both still running
        assert _healthz(vla_port) == 200 and _healthz(robot_port) == 200
        client = WebsocketVLA("127.0.0.1", vla_port, connect_timeout=5)
        assert client.infer(SKILL_OBS)["actions"].shape == (10, 7)
        client.close()
        arm = RobotClient(f"ws://127.0.0.1:{robot_port}", connect_timeout=5)
        assert arm.begin_episode(0)["steps"] == 0
        arm.close()


def _hostile(first: bytes, reply: bytes):
    """A handler that sends `first` as its metadata and `reply` to every request."""

    async def handler(ws):
        await ws.send(first)
        async for _ in ws:
            await ws.send(reply)

    return handler


@pytest.mark.parametrize("where", ["metadata", "reply"])
def test_clients_refuse_object_arrays_from_a_hostile_server(where):
    hostile = msgpack.packb({"actions": _array("|O", POINTER, [1])})
    plain = msgpack.packb({"action_dim": 7})
    with websocket_server(_hostile(hostile if where == "metadata" else plain, hostile)) as port:
        uri = f"ws://127.0.0.1:{port}"
        with pytest.raises(VLAError, match=r"dtype '\|O' refused"):
            WebsocketVLA(uri, 0, connect_timeout=2).infer(OBS)
        with pytest.raises(RobotError, match=r"dtype '\|O' refused"):
            RobotClient(uri, connect_timeout=2).status()


@pytest.mark.parametrize("client", ["vla", "robot"])
def test_clients_keep_trying_until_the_deadline_they_name(client):
    (port,) = free_ports(1)  # nothing listens there
    start = time.monotonic()
    if client == "vla":
        with pytest.raises(VLAError, match=f"no policy server at ws://127.0.0.1:{port} after 2s"):
            WebsocketVLA("127.0.0.1", port, connect_timeout=2.0)
    else:
        with pytest.raises(RobotError, match=f"no robot server at ws://127.0.0.1:{port} after 2s"):
            RobotClient(f"ws://127.0.0.1:{port}", connect_timeout=2.0)
    assert 2.0 <= time.monotonic() - start < 3.5
