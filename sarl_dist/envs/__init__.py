"""Environments behind one interface (envs.base.Env), built from the config."""

from __future__ import annotations

from sarl_dist.config import Config, ConfigError
from sarl_dist.envs.base import Env, EnvSpec


def make_env(cfg: Config) -> Env:
    if cfg.env.kind == "skill_chain":
        from sarl_dist.envs.skill_chain import SkillChainEnv

        return SkillChainEnv(cfg.env)
    if cfg.env.kind == "libero":
        from sarl_dist.envs.libero import LiberoEnv

        return LiberoEnv(cfg.env)
    if cfg.env.kind == "robot":
        from sarl_dist.envs.robot import RobotEnv

        return RobotEnv(cfg.env)
    raise ValueError(f"env.kind: unknown environment {cfg.env.kind!r}")


def env_spec(cfg: Config) -> EnvSpec:
    """The task and its horizons, without starting a simulator (validates the task name)."""
    if cfg.env.kind == "skill_chain":
        from sarl_dist.envs.skill_chain import spec

        try:
            return spec(cfg.env)
        except ValueError as exc:
            raise ConfigError(f"env.task: {exc}") from None
    if cfg.env.kind == "libero":
        from sarl_dist.envs.libero import spec as libero_spec

        return libero_spec(cfg.env)
    if cfg.env.kind == "robot":
        from sarl_dist.envs.robot import spec as robot_spec

        return robot_spec(cfg.env)
    raise ValueError(f"env.kind: unknown environment {cfg.env.kind!r}")


def oracle_prompts(cfg: Config) -> tuple[str, ...]:
    """The task's atomic prompt sequence: the test bed's upper bound (method `oracle`).

    LIBERO-10's sequences are `envs.libero.ORACLE_PROMPTS`; any other LIBERO task is a
    single LIBERO-90-style instruction already; the skill chain's are its canonical steps.
    """
    task = env_spec(cfg).task
    if cfg.env.kind == "skill_chain":
        from sarl_dist.envs.skill_chain import SKILLS, resolve_task, task_skills

        stages = cfg.env.skill_chain.stages
        return tuple(
            SKILLS[s].name for s in task_skills(resolve_task(cfg.env.task, stages), stages)
        )
    from sarl_dist.envs.libero import ORACLE_PROMPTS

    return ORACLE_PROMPTS.get(task, (task,))
