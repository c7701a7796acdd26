"""The VLAServer actor: a run that uses the skill VLA serves it itself, over openpi's
protocol, so workers reach it through the same client code as a pi0.5 server.
`sarl probe` uses the same class in process."""

from __future__ import annotations

from sarl_dist.config import Config
from sarl_dist.vla import api_key, make_server_policy
from sarl_dist.vla.server import PolicyServer


class VLAServer:
    def __init__(self, cfg: Config, host: str = "127.0.0.1") -> None:
        policy, metadata = make_server_policy(cfg.vla.kind, cfg)
        self.server = PolicyServer(
            policy, host, 0, metadata, api_key=api_key(cfg), drop_every=cfg.faults.drop_vla_every
        )
        self.server.start_background()

    def address(self) -> tuple[str, int]:
        return self.server.host, self.server.port

    def stop(self) -> None:
        self.server.stop()
