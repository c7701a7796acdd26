"""VLA policies behind openpi's interface (vla.base.VLAPolicy), built from the config."""

from __future__ import annotations

from typing import Any

from sarl_dist.config import Config
from sarl_dist.vla.base import ChunkedVLA, VLAPolicy
from sarl_dist.wire import api_key_from_env

SERVABLE = ("skill_chain", "skill", "neural", "openpi")


def api_key(cfg: Config) -> str | None:
    """The policy server's key, from the environment only (never from a config file)."""
    return api_key_from_env(cfg.vla.api_key_env, "vla.api_key_env")


def configured_servers(cfg: Config) -> list[tuple[str, int]]:
    """The policy servers of a kind=websocket run: vla.addresses, else vla.host:vla.port."""
    if not cfg.vla.addresses:
        return [(cfg.vla.host, cfg.vla.port)]
    return [(host, int(port)) for host, _, port in (a.rpartition(":") for a in cfg.vla.addresses)]


def servers_for(worker: int, servers: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Worker i's servers, the one it uses first: server i mod N, then the others in an
    order that also turns with i, so the workers of a server that dies spread over the rest."""
    n = len(servers)
    if n < 2:
        return list(servers)
    first = worker % n
    rest = [servers[(first + 1 + k) % n] for k in range(n - 1)]
    turn = (worker // n) % (n - 1)
    return [servers[first], *rest[turn:], *rest[:turn]]


def make_vla(
    cfg: Config, seed: int, action_dim: int, servers: list[tuple[str, int]] | None = None
) -> ChunkedVLA:
    """The worker's VLA, replanning every vla.replan_steps: in process for the test bed, else
    a client of its policy servers (`servers_for` order; default: the configured ones) whose
    metadata must fit the run (action_dim, and an action_horizon of at least replan_steps,
    where the server announces them)."""
    if cfg.vla.kind == "skill_chain":
        from sarl_dist.vla.skill_chain import SkillChainVLA

        policy: VLAPolicy = SkillChainVLA(cfg.env.skill_chain, seed=seed)
    else:
        from sarl_dist.vla.client import WebsocketVLA, metadata_check

        (host, port), *others = servers or configured_servers(cfg)
        policy = WebsocketVLA(
            host,
            port,
            api_key(cfg),
            cfg.vla.connect_timeout,
            expect_metadata=metadata_check(action_dim, cfg.vla.replan_steps),
            others=others,
            failover_after=cfg.vla.failover_after,
        )
    return ChunkedVLA(policy, cfg.vla.replan_steps, action_dim)


def make_server_policy(name: str, cfg: Config) -> tuple[VLAPolicy, dict[str, Any]]:
    """A policy for `sarl serve-vla`, with the metadata its server announces."""
    if name == "skill_chain":
        from sarl_dist.skill_chain import NUM_SKILLS
        from sarl_dist.vla.skill_chain import SkillChainVLA

        policy = SkillChainVLA(cfg.env.skill_chain, seed=cfg.seed)
        return policy, {"policy": name, "action_dim": NUM_SKILLS, "action_horizon": policy.horizon}
    if name == "skill":
        from sarl_dist.vla.skill import HORIZON, SkillVLA

        policy = SkillVLA(
            seed=cfg.seed,
            action_noise=cfg.vla.action_noise,
            p_partial=cfg.vla.p_partial,
            p_zero_shot=cfg.vla.p_zero_shot,
        )
        return policy, {"policy": name, "action_dim": 7, "action_horizon": HORIZON}
    if name == "neural":
        from sarl_dist.vla.neural import ACTION_DIM, HORIZON, NeuralStandIn

        policy = NeuralStandIn(cfg.seed, cfg.vla.neural_width, cfg.vla.neural_blocks)
        return policy, {"policy": name, "action_dim": ACTION_DIM, "action_horizon": HORIZON}
    if name == "openpi":
        from sarl_dist.vla.openpi_policy import load_openpi

        policy = load_openpi(cfg.vla.openpi_config, cfg.vla.openpi_checkpoint)
        return policy, policy.metadata
    raise ValueError(f"--policy: unknown policy {name!r}; choose from {', '.join(SERVABLE)}")
