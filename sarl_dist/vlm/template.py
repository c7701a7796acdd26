"""The offline template proposer: candidate prompts from the task sentence, no network.

It stands in for a VLM the way the skill VLA stands in for pi0.5. From a long-horizon
LIBERO sentence it derives:

- decompositions into atomic LIBERO-90-style instructions ("put both the X and the Y in
  the Z" -> one pick-and-place per object; "A and close it" -> A, "close the Z"),
- paraphrases of those (some the skill VLA knows, some it does not: "deposit ..."),
- plausible-but-wrong variants (pick only, the task sentence itself).

Each query offers the decomposition steps first (up to n - 1) and fills the rest with a
sample of the others, seeded by the image, so the same scene gets the same candidates.
Which candidate works at which point is what RL has to learn.
"""

from __future__ import annotations

import re

from sarl_dist.core.prompt_cache import normalize_prompt
from sarl_dist.vlm.base import ProposalRequest

_BOTH = re.compile(r"^put both the (?P<a>.+?) and the (?P<b>.+?) (?P<rel>in|on) the (?P<dst>.+)$")
_PLACE = re.compile(
    r"^(?:put|pick up) the (?P<obj>.+?) (?:and (?:put|place) it )?(?P<rel>in|on|into|onto) "
    r"(?:the )?(?P<dst>.+)$"
)
_CLAUSES = re.compile(r" and (?=(?:close|open|turn|pick)\b|(?:put|place)\b(?!\s+it\b))")


def _pick_place(obj: str, rel: str, dst: str) -> str:
    return f"pick up the {obj} and put it {rel} the {dst}"


def decompose(task: str) -> list[str]:
    """Atomic instructions for a long-horizon sentence (the sentence itself if atomic)."""
    text = normalize_prompt(task)
    m = _BOTH.match(text)
    if m:
        return [_pick_place(m["a"], m["rel"], m["dst"]), _pick_place(m["b"], m["rel"], m["dst"])]
    clauses = _CLAUSES.split(text)
    steps: list[str] = []
    last_place = None
    for clause in clauses:
        if last_place:
            clause = re.sub(r"\bit$", f"the {last_place}", clause)
        pm = _PLACE.match(clause)
        if pm:
            last_place = pm["dst"].removeprefix("the ")
        subject = re.match(r"^turn (?:on|off) the (?P<obj>.+)$", clause)
        if subject:
            last_place = subject["obj"]
        steps.append(clause)
    return steps


def variants(step: str) -> tuple[list[str], list[str]]:
    """(paraphrases, plausible-but-wrong variants) of one atomic instruction."""
    m = _PLACE.match(step)
    if not m:
        return [], []
    obj, rel, dst = m["obj"], m["rel"], m["dst"].removeprefix("the ")
    paraphrases = [f"put the {obj} {rel} the {dst}", f"deposit the {obj} inside the {dst}"]
    wrong = [f"pick up the {obj}", f"pick up the {dst}"]
    return paraphrases, wrong


class TemplateProposer:
    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def propose(self, request: ProposalRequest) -> list[str]:
        steps = decompose(request.task)
        others: list[str] = []
        for step in steps:
            paraphrases, wrong = variants(step)
            others += paraphrases + wrong
        if len(steps) > 1:
            others.append(request.task)
        steps, others = request.allowed(steps), request.allowed(others)
        rng = request.scene_rng(self.seed)
        head = steps[: max(1, request.n - 1)]
        rest = [others[i] for i in rng.permutation(len(others))]
        return (head + rest)[: request.n]
