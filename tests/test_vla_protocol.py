"""openpi's websocket protocol, both ways, over real sockets on 127.0.0.1."""

import urllib.error
import urllib.request

import numpy as np
import pytest
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from sarl_dist.skill_chain import NUM_SKILLS
from sarl_dist.testing import tiny_config, websocket_server
from sarl_dist.vla import make_server_policy, make_vla
from sarl_dist.vla.base import ChunkedVLA, VLAError
from sarl_dist.vla.client import WebsocketVLA, metadata_check
from sarl_dist.vla.server import PolicyServer
from sarl_dist.vla.skill_chain import SkillChainVLA
from sarl_dist.wire import MsgpackServer

OBS = {"observation/state": np.zeros(8, np.float32), "prompt": "open the drawer"}


class Failing:
    def infer(self, obs):
        raise ValueError("checkpoint not loaded")

    def reset(self):
        pass


@pytest.fixture
def server():
    policy, metadata = make_server_policy("skill_chain", tiny_config())
    srv = PolicyServer(policy, port=0, metadata=metadata).start_background()
    yield srv
    srv.stop()


def test_openpi_client_talks_to_our_server(server):
    client = WebsocketClientPolicy("127.0.0.1", server.port)
    assert client.get_server_metadata()["action_dim"] == NUM_SKILLS
    reply = client.infer(OBS)
    assert reply["actions"].shape == (10, NUM_SKILLS)
    assert int(np.argmax(reply["actions"][0])) == 0  # "open the drawer" is skill 0
    assert reply["server_timing"]["infer_ms"] >= 0
    assert "prev_total_ms" in client.infer(OBS)["server_timing"]


def test_healthz_answers_ok(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as resp:
        assert resp.status == 200
        assert resp.read() == b"OK\n"


def test_api_key_is_required_and_checked():
    srv = PolicyServer(SkillChainVLA(tiny_config().env.skill_chain), port=0, api_key="s3cret")
    srv.start_background()
    try:
        with pytest.raises(VLAError, match="refused the API key"):
            WebsocketVLA("127.0.0.1", srv.port, api_key="wrong", connect_timeout=2)
        with pytest.raises(VLAError, match="refused the API key"):
            WebsocketVLA("127.0.0.1", srv.port, connect_timeout=2)
        ok = WebsocketVLA("127.0.0.1", srv.port, api_key="s3cret", connect_timeout=2)
        assert ok.infer(OBS)["actions"].shape == (10, NUM_SKILLS)
        ok.close()
    finally:
        srv.stop()


def test_server_errors_arrive_as_a_clear_message():
    srv = PolicyServer(Failing(), port=0).start_background()
    try:
        client = WebsocketVLA("127.0.0.1", srv.port, connect_timeout=2)
        with pytest.raises(VLAError, match="checkpoint not loaded"):
            client.infer(OBS)
    finally:
        srv.stop()


def test_oversized_frames_are_refused():
    srv = PolicyServer(SkillChainVLA(tiny_config().env.skill_chain), port=0, max_message_bytes=4096)
    srv.start_background()
    try:
        client = WebsocketVLA("127.0.0.1", srv.port, connect_timeout=2)
        with pytest.raises(VLAError, match="too big"):
            client.infer({**OBS, "observation/image": np.zeros((224, 224, 3), np.uint8)})
    finally:
        srv.stop()


def test_no_server_fails_by_the_deadline_not_a_hang():
    with pytest.raises(VLAError, match="no policy server"):
        WebsocketVLA("127.0.0.1", 1, connect_timeout=0.5)


def test_a_server_dying_as_we_connect_is_retried_until_the_deadline():
    """A replica killed mid-handshake drops the connection before its metadata frame:
    that is a server not there yet, retried, then a VLAError; never a raw websockets error."""

    class Dying(MsgpackServer):
        async def handle(self, ws):
            ws.transport.abort()

    dying = Dying(port=0).start_background()
    try:
        with pytest.raises(VLAError, match=r"no policy server .* \(ConnectionClosedError"):
            WebsocketVLA("127.0.0.1", dying.port, connect_timeout=0.5)
    finally:
        dying.stop()


def test_metadata_that_does_not_fit_the_run_is_refused(server):
    with pytest.raises(VLAError, match=f"action_dim={NUM_SKILLS}, the environment takes 7"):
        WebsocketVLA("127.0.0.1", server.port, expect_metadata=metadata_check(7, 5))
    with pytest.raises(VLAError, match=r"action_horizon=10, shorter than vla.replan_steps=12"):
        WebsocketVLA("127.0.0.1", server.port, expect_metadata=metadata_check(NUM_SKILLS, 12))
    fits = WebsocketVLA("127.0.0.1", server.port, expect_metadata=metadata_check(NUM_SKILLS, 5))
    fits.close()


def test_a_run_checks_its_policy_servers_metadata(server):
    cfg = tiny_config("vla.kind=websocket", f"vla.port={server.port}", "vla.connect_timeout=2")
    with pytest.raises(VLAError, match="action_dim"):
        make_vla(cfg, 0, action_dim=7)
    assert make_vla(cfg, 0, action_dim=NUM_SKILLS).next_action(lambda: OBS).shape == (NUM_SKILLS,)


OPENPI_SERVE = {"compression": None, "max_size": None}  # as openpi's server serves


def _openpi_style(actions: np.ndarray, fail_after: int | None = None):
    """An independent minimal handler written to openpi's protocol, for our client."""

    async def handler(ws):
        packer = msgpack_numpy.Packer()
        await ws.send(packer.pack({"policy": "openpi-style"}))
        served = 0
        async for frame in ws:
            obs = msgpack_numpy.unpackb(frame)
            if fail_after is not None and served >= fail_after:
                await ws.send("Traceback: boom")
                await ws.close(code=1011)
                return
            served += 1
            await ws.send(packer.pack({"actions": actions, "echo": obs["prompt"]}))

    return handler


def test_our_client_talks_to_an_openpi_protocol_server_and_replans():
    actions = np.arange(10 * 7, dtype=np.float32).reshape(10, 7)
    with websocket_server(_openpi_style(actions, fail_after=2), **OPENPI_SERVE) as port:
        client = WebsocketVLA("127.0.0.1", port, connect_timeout=2)
        assert client.metadata == {"policy": "openpi-style"}
        chunked = ChunkedVLA(client, replan_steps=5, action_dim=7)
        first = [chunked.next_action(lambda: OBS)[0] for _ in range(10)]
        assert first == [0.0, 7.0, 14.0, 21.0, 28.0] * 2  # 5 of each 10-step chunk, then ask again
        with pytest.raises(VLAError, match="boom"):
            chunked.next_action(lambda: OBS)


def test_wrong_action_shape_from_a_server_is_refused():
    with websocket_server(_openpi_style(np.zeros((10, 3), np.float32)), **OPENPI_SERVE) as port:
        chunked = ChunkedVLA(WebsocketVLA("127.0.0.1", port), 5, action_dim=7)
        with pytest.raises(VLAError, match="shape"):
            chunked.next_action(lambda: OBS)


def test_plain_http_elsewhere_is_refused(server):
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
