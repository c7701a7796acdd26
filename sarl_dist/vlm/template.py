"""The offline template proposer: candidate prompts from the task sentence and the scene.

It stands in for a VLM the way the skill VLA stands in for pi0.5, with no network. From
a long-horizon LIBERO sentence and, where known, the scene's objects and fixtures (read
from LIBERO's BDDL, vlm/scene.py) it derives:

- decompositions into atomic LIBERO-90-style instructions ("put both the X and the Y in
  the Z" -> one pick-and-place per object, "both Xs" -> the left X and the right X;
  "A and close it" -> A, "close the Z"; "open the Z and put the X inside" -> "open the
  Z", "put the X in the Z"),
- paraphrases of those (some the skill VLA knows, some it does not: "deposit ...", another
  word for the object),
- plausible-but-wrong variants: pick only, another object of the scene to the same place,
  the right object to another place of the scene, the opposite fixture command, the
  task sentence itself,
- what else the scene affords: each object to each place, each fixture command.

An atomic sentence has nothing to decompose: its steps are then the sentence and its
restatements in the scene's own names for the object ("the book" -> "the black book"),
as a VLM looking at the scene would name it; which of them the VLA follows is for RL.

Each query offers the decomposition steps first (up to n - 1) and fills the rest with a
sample of the others, seeded by the run's seed and the image, so the same scene gets the
same candidates. Which candidate works at which point is what RL has to learn. Asked
with an episode's history (the VLM-only baseline), it follows its decomposition one step
per earlier decision, as an open-loop plan: the next step first, the last one repeated.
"""

from __future__ import annotations

import re

from sarl_dist.prompt_text import normalize_prompt
from sarl_dist.vlm.base import ProposalRequest
from sarl_dist.vlm.scene import Scene

_BOTH = re.compile(r"^put both the (?P<a>.+?) and the (?P<b>.+?) (?P<rel>in|on) the (?P<dst>.+)$")
_BOTH_PLURAL = re.compile(r"^put both (?:the )?(?P<kind>.+?)s (?P<rel>in|on) the (?P<dst>.+)$")
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
    m = _BOTH_PLURAL.match(text)  # "both moka pots": the left one and the right one
    if m:
        return [
            _pick_place(f"{side} {m['kind']}", m["rel"], m["dst"]) for side in ("left", "right")
        ]
    clauses = _CLAUSES.split(text)
    steps: list[str] = []
    last_place = None
    for clause in clauses:
        if last_place:
            clause = re.sub(r"\bit$", f"the {last_place}", clause)
        pm = _PLACE.match(clause)
        if pm:
            last_place = pm["dst"].removeprefix("the ")
        clause = re.sub(r" inside$", f" in the {last_place}", clause) if last_place else clause
        subject = re.match(r"^(?:turn (?:on|off)|open|close) the (?P<obj>.+)$", clause)
        if subject:
            last_place = subject["obj"]
        steps.append(clause)
    return steps


def restatements(step: str, scene: Scene | None) -> list[str]:
    """A pick-and-place step with its object called by the scene's other names for it."""
    m = _PLACE.match(step)
    if not m or scene is None:
        return []
    dst = m["dst"].removeprefix("the ")
    return [_pick_place(alias, m["rel"], dst) for alias in scene.other_names(m["obj"])]


_OPPOSITE = {"open": "close", "close": "open", "turn on": "turn off", "turn off": "turn on"}
_COMMAND = re.compile(r"^(?P<verb>open|close|turn on|turn off) the (?P<what>.+)$")


def variants(step: str, scene: Scene | None = None) -> tuple[list[str], list[str]]:
    """(paraphrases, plausible-but-wrong variants) of one atomic instruction."""
    if m := _COMMAND.match(step):
        return [], [f"{_OPPOSITE[m['verb']]} the {m['what']}"]
    m = _PLACE.match(step)
    if not m:
        return [], []
    obj, rel, dst = m["obj"], m["rel"], m["dst"].removeprefix("the ")
    paraphrases = [f"put the {obj} {rel} the {dst}", f"deposit the {obj} inside the {dst}"]
    paraphrases += restatements(step, scene)
    wrong = [f"pick up the {obj}", f"pick up the {dst}"]
    if scene is not None:
        wrong += [_pick_place(o, rel, dst) for o in scene.objects if o not in (obj, dst)]
        wrong += [
            f"pick up the {obj} and put it {place}"
            for place in scene.places
            if not place.endswith(f" the {dst}") and obj not in place
        ]
    return paraphrases, wrong


class TemplateProposer:
    def __init__(self, seed: int = 0, scene: Scene | None = None) -> None:
        self.seed, self.scene = seed, scene

    def propose(self, request: ProposalRequest) -> list[str]:
        steps = decompose(request.task)
        if len(steps) == 1:
            steps += restatements(steps[0], self.scene)
        others: list[str] = []
        for step in steps:
            paraphrases, wrong = variants(step, self.scene)
            others += paraphrases + wrong
        if self.scene is not None:  # what else the scene affords, as a VLM looking at it might
            others += list(self.scene.commands)
            others += [
                f"put the {o} {p}"
                for o in self.scene.objects
                for p in self.scene.places
                if not p.endswith(f" the {o}")
            ]
        if len(steps) > 1:
            others.append(request.task)
        step_keys = {normalize_prompt(s) for s in steps}
        others = list(
            {
                normalize_prompt(o): o for o in others if normalize_prompt(o) not in step_keys
            }.values()
        )
        if request.history:  # the VLM-only baseline: the next step of the plan comes first
            k = min(len(request.history), len(steps) - 1)
            steps = steps[k:] + steps[:k]
        steps, others = request.allowed(steps), request.allowed(others)
        rng = request.scene_rng(self.seed)
        head = steps[: max(1, request.n - 1)]
        rest = [others[i] for i in rng.permutation(len(others))]
        return (head + rest)[: request.n]
