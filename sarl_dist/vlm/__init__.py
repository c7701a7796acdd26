"""Candidate-prompt proposers behind one interface (vlm.base), built from the config."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from sarl_dist.config import Config
from sarl_dist.vlm.base import (
    REFUSALS,
    Answer,
    ProposalError,
    ProposalRequest,
    Proposer,
    RemoteProposer,
    VLMUnusableError,
)

log = logging.getLogger(__name__)
REMOTE = ("gemini", "openai")
# Failures that say the VLM cannot serve a run now; others (a malformed or withheld answer)
# are about one answer, and the run's fallback handles them.
_UNUSABLE = ("timeout", "connection", "deadline", "http_429", "http_5")


def make_proposer(cfg: Config) -> Proposer | RemoteProposer:
    """The configured backend; a remote one without its key fails here, with the variable named."""
    backend = cfg.vlm.backend
    if backend == "skill_chain":
        from sarl_dist.vlm.skill_chain import SkillChainProposer

        return SkillChainProposer(cfg.env.skill_chain, seed=cfg.seed)
    if backend == "template":
        from sarl_dist.vlm.template import TemplateProposer

        scene = None
        if cfg.env.kind == "libero":
            from sarl_dist.vlm.scene import libero_scene

            scene = libero_scene(cfg.env)
        return TemplateProposer(seed=cfg.seed, scene=scene)
    if backend == "gemini":
        from sarl_dist.vlm.remote import GeminiProposer

        return GeminiProposer(cfg.vlm)
    if backend == "openai":
        from sarl_dist.vlm.remote import OpenAIProposer

        return OpenAIProposer(cfg.vlm)
    raise ValueError(f"vlm.backend: unknown proposer {backend!r}")


def identity(cfg: Config) -> dict[str, Any]:
    """Everything that shapes a backend's answers (part of the response-cache key).

    Offline proposers depend on the seed and the environment; remote ones on the model,
    its settings, the endpoint and what the model is told, but not on the run's seed, so
    runs with other seeds reuse their answers.
    """
    backend = cfg.vlm.backend
    if backend not in REMOTE:
        return {"backend": backend, "seed": cfg.seed, "env": cfg.env.model_dump(mode="json")}
    from sarl_dist.vlm.prompting import instruction_digest

    section = getattr(cfg.vlm, backend).model_dump(mode="json")
    prices = ("usd_per_mtok_in", "usd_per_mtok_out")
    return {
        "backend": backend,
        **{k: v for k, v in section.items() if k not in prices},
        "instruction": instruction_digest(),
    }


async def ask(proposer: Proposer | RemoteProposer, request: ProposalRequest) -> Answer:
    """One query to any backend: remote ones are awaited, offline ones answer at once."""
    if isinstance(proposer, RemoteProposer):
        return await proposer.ask(request)
    return Answer(tuple(proposer.propose(request)))


def check_remote(cfg: Config, proposer: RemoteProposer, task: str) -> None:
    """One real query before a run starts (a blank frame, the run's task): a bad key, an
    unknown model or an endpoint that does not answer stops the command with VLMUnusableError
    instead of a run that answers every query from its cache."""
    backend = cfg.vlm.backend
    request = ProposalRequest(task, np.zeros((64, 64, 3), np.uint8), (), False, cfg.vlm.candidates)
    try:
        asyncio.run(ask(proposer, request))
    except ProposalError as exc:
        if exc.kind in REFUSALS:
            raise VLMUnusableError(
                f"vlm.backend={backend} refused a test query ({exc}): check the API key and "
                f"vlm.{backend}.model"
            ) from None
        if exc.kind.startswith(_UNUSABLE):
            raise VLMUnusableError(
                f"vlm.backend={backend} did not answer a test query ({exc}): check "
                f"vlm.{backend}.base_url and the network, or raise vlm.timeout"
            ) from None
        log.warning("the VLM's test answer was unusable (%s); starting anyway", exc)
