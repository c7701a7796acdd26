"""The skill chain's VLM: it reads the stage from the image and the steps from the task
sentence, and offers n candidates: the canonical next step (with chance p_helpful, else
its paraphrase) plus plausible-but-wrong ones (other steps, unfamiliar paraphrases, the
undo of the last step, the task sentence itself)."""

from __future__ import annotations

from sarl_dist.config import SkillChainConfig
from sarl_dist.prompt_text import normalize_prompt
from sarl_dist.skill_chain import CANON, SKILLS, decode_stage, inverse
from sarl_dist.vlm.base import ProposalRequest


class SkillChainProposer:
    def __init__(self, cfg: SkillChainConfig, seed: int = 0) -> None:
        self.cfg, self.seed = cfg, seed

    def propose(self, request: ProposalRequest) -> list[str]:
        steps = [CANON.get(normalize_prompt(p)) for p in request.task.split(", then ")]
        if any(s is None for s in steps):
            raise ValueError(f"not a skill-chain task: {request.task!r}")
        stage = min(decode_stage(request.image, len(steps)), len(steps) - 1)
        rng = request.scene_rng(self.seed)
        nxt = SKILLS[steps[stage]]
        helpful = nxt.name if rng.random() < self.cfg.p_helpful else nxt.paraphrase
        others = [request.task, nxt.unfamiliar]
        for i, s in enumerate(steps):
            if i != stage:
                others += [SKILLS[s].name, SKILLS[s].paraphrase]
        if stage > 0:
            others.append(SKILLS[inverse(steps[stage - 1])].name)
        pool = [helpful, *(others[i] for i in rng.permutation(len(others)))]
        return request.allowed(pool)[: request.n]
