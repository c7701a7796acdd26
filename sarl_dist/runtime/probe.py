"""`sarl probe`: a fixed prompt sequence (or the task sentence alone) on one task.

It measures what a prompt sequence does with the VLA, without learning: the task
sentence alone is the zero-shot baseline, a sequence of atomic prompts the testbed's
upper bound. The VLA is reached exactly as in training (a served skill VLA is served
here on 127.0.0.1 and reached through the websocket client). With a video directory it
writes one MP4 per episode of the agentview camera with the active prompt drawn on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sarl_dist.config import Config
from sarl_dist.core.prompt_cache import PromptCache
from sarl_dist.core.rollout import Episode, Parts, run_episode
from sarl_dist.envs import make_env
from sarl_dist.methods import FirstCandidate
from sarl_dist.report.video import Recorder
from sarl_dist.runtime.vla_server import VLAServer
from sarl_dist.runtime.worker import PlanCandidates
from sarl_dist.vla import make_vla
from sarl_dist.vla.base import ChunkedVLA


@contextlib.contextmanager
def vla_for(cfg: Config, seed: int, action_dim: int) -> Iterator[ChunkedVLA]:
    server = VLAServer(cfg) if cfg.vla.kind == "skill" else None
    servers = [server.address()] if server is not None else None
    try:
        yield make_vla(cfg, seed, action_dim, servers)
    finally:
        if server is not None:
            server.stop()


def probe(cfg: Config, prompts: list[str], episodes: int, video_dir: Path | None = None) -> dict:
    env = make_env(cfg)
    sequence = prompts or [env.spec.task] * env.spec.max_decisions
    if len(sequence) > env.spec.max_decisions:
        raise ValueError(
            f"{len(sequence)} prompts do not fit in env.max_decisions={env.spec.max_decisions}"
        )
    cache = PromptCache(len(sequence) + 1)  # ids as a run gives them; "reset to home" is 0
    plan = [cache.add(text) for text in sequence]
    results = []
    with vla_for(cfg, cfg.seed, env.spec.action_dim) as vla:
        parts = Parts(
            env,
            vla,
            FirstCandidate(cfg),
            PlanCandidates(plan),
            None,
            dict(enumerate(cache.texts)),
            cache.capacity,
        )
        for j in range(episodes):  # LIBERO's i-th fixed init state, seeded i
            recorder = Recorder(env) if video_dir else None
            summary, _ = run_episode(parts, Episode(-1 - j, j, True, len(sequence)), recorder)
            if recorder is not None:
                video_dir.mkdir(parents=True, exist_ok=True)
                outcome = "ok" if summary["success"] else "fail"
                recorder.save(video_dir / f"episode{j:03d}_{outcome}.mp4")
            results.append(
                {
                    "episode": j,
                    "success": summary["success"],
                    "decisions": summary["decisions"],
                    "seconds": round(summary["wall_seconds"], 2),
                }
            )
    env.close()
    rate = float(np.mean([r["success"] for r in results]))
    return {
        "task": env.spec.task,
        "prompts": sequence,
        "episodes": episodes,
        "success_rate": rate,
        "results": results,
    }
