"""Environments behind one interface (envs.base.Env), registered in one place.

A kind of environment is one module and one line in ENVIRONMENTS. Its module defines
`make(cfg: EnvConfig) -> Env`, `spec(cfg: EnvConfig) -> EnvSpec` (the task and its
horizons, without starting a simulator; it validates the task) and
`atomic_prompts(cfg: EnvConfig) -> tuple[str, ...]` (the task's atomic prompt sequence:
the test bed's upper bound, the `oracle` method). Modules load on first use, so a run
imports only its own simulator.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sarl_dist.config import Config
from sarl_dist.envs.base import Env, EnvSpec

ENVIRONMENTS = {
    "skill_chain": "sarl_dist.envs.skill_chain",
    "libero": "sarl_dist.envs.libero",
    "robot": "sarl_dist.envs.robot",
}


def _module(cfg: Config) -> ModuleType:
    return importlib.import_module(ENVIRONMENTS[cfg.env.kind])


def make_env(cfg: Config) -> Env:
    return _module(cfg).make(cfg.env)


def env_spec(cfg: Config) -> EnvSpec:
    return _module(cfg).spec(cfg.env)


def atomic_prompts(cfg: Config) -> tuple[str, ...]:
    return _module(cfg).atomic_prompts(cfg.env)
