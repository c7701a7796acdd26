"""The policy server's perimeter: loopback by default, openpi's API-key header checked and
never echoed, msgpack only (a pickle frame is refused unread), keys named in configs but
read only from the environment. A whole run with planted keys: test_reliability_resume.py."""

import logging
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.sync.client import connect

from sarl_dist.testing import free_ports, tiny_config, wait_healthy
from sarl_dist.vla import api_key
from sarl_dist.vla.base import VLAError
from sarl_dist.vla.client import WebsocketVLA
from sarl_dist.vla.server import PolicyServer
from sarl_dist.vla.skill_chain import SkillChainVLA

KEY, WRONG = "planted-server-key-41c9", "planted-wrong-key-77e0"


@pytest.fixture
def keyed_server():
    srv = PolicyServer(SkillChainVLA(tiny_config().env.skill_chain), port=0, api_key=KEY)
    yield srv.start_background()
    srv.stop()


def _listening(port: int) -> set[str]:
    """The addresses the kernel has a listening TCP socket on for `port` (/proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


def test_the_servers_listen_on_loopback_only_unless_told(keyed_server):
    assert _listening(keyed_server.port) <= LOOPBACK and _listening(keyed_server.port)
    exposed = PolicyServer(SkillChainVLA(tiny_config().env.skill_chain), "0.0.0.0", 0)
    exposed.start_background()
    try:
        assert _listening(exposed.port) == {"00000000"}  # the check sees a wildcard bind
    finally:
        exposed.stop()
    vla_port, robot_port = free_ports(2)
    commands = [
        ["serve-vla", "--policy", "skill_chain", "--port", str(vla_port)],
        ["robot-server", "--backend", "sarl_dist.testing:fake_gym_arm", "--port", str(robot_port)],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sarl_dist.cli.main", *c], stderr=subprocess.DEVNULL
        )
        for c in commands
    ]
    try:
        for port, proc in zip((vla_port, robot_port), procs, strict=True):
            wait_healthy(port, proc)
            assert _listening(port) and _listening(port) <= LOOPBACK
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def test_a_wrong_key_is_refused_and_no_key_is_echoed(keyed_server, caplog):
    with caplog.at_level(logging.DEBUG), pytest.raises(VLAError) as refused:
        WebsocketVLA("127.0.0.1", keyed_server.port, api_key=WRONG, connect_timeout=2)
    assert "refused the API key (401)" in str(refused.value)
    for key in (KEY, WRONG):
        assert key not in str(refused.value) and key not in caplog.text


def test_a_pickle_frame_is_refused_and_never_unpickled(keyed_server, tmp_path):
    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self):
            return (marker.touch, ())

    headers = {"Authorization": f"Api-Key {KEY}"}
    with connect(f"ws://127.0.0.1:{keyed_server.port}", additional_headers=headers) as ws:
        ws.recv()  # metadata
        ws.send(pickle.dumps(Exploit()))
        reply = ws.recv()
    assert isinstance(reply, str)  # a text frame: openpi's error reply
    assert not marker.exists()


def test_keys_are_named_in_configs_and_read_from_the_environment(monkeypatch):
    cfg = tiny_config("vla.api_key_env=SARL_TEST_KEY_VAR")
    monkeypatch.delenv("SARL_TEST_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="SARL_TEST_KEY_VAR is not set"):
        api_key(cfg)
    monkeypatch.setenv("SARL_TEST_KEY_VAR", KEY)
    assert api_key(cfg) == KEY and KEY not in cfg.model_dump_json()
