"""What a remote VLM is told and how its answer is read, for every remote backend.

The model sees a fixed system instruction (the commands the robot understands and how
it fails), the current camera image and the task, and answers JSON validated by a
pydantic schema. While the prompt cache has room it writes new prompts; once the cache
is frozen the request lists the cached prompts by id and the answer must choose among
them. A choice whose text is a cached prompt under another id is repaired to that id;
a choice naming anything else is rejected (counted), never added to the cache.
"""

from __future__ import annotations

import hashlib
import logging

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sarl_dist.core.prompt_cache import RESET_ID, normalize_prompt
from sarl_dist.vlm.base import Answer, ProposalError, ProposalRequest, png_bytes

log = logging.getLogger(__name__)

SYSTEM_INSTRUCTION = """\
You choose the next instruction for a robot arm. The arm is driven by a \
vision-language-action policy that was trained on short, single-step tabletop \
instructions and executes one instruction at a time for a few seconds.

Instructions it understands (use the objects' plain names as seen in the scene):
- pick up the <object> and put it in the <container> / on the <surface>
- put the <object> in / on / on top of / to the left of / to the right of the <place>
- pick up the <object>
- open the <drawer, door or microwave> / close the <drawer, door or microwave>
- turn on the stove / turn off the stove

How it fails:
- It runs only one skill per instruction. An instruction with several steps ("both",
  "and then", two verbs) collapses into a single, often wrong, skill.
- Unfamiliar words for an object make it act on the wrong object.
- It does not plan: the overall task sentence is usually too long for it.
- It can knock objects over or drop them; then the same step may be needed again.

Given the camera image and the overall task, propose instructions for the next step \
from the scene as it is now. Offer genuine alternatives (different next steps, \
different phrasings), most promising first. Answer only with the requested JSON."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAnswer(_Strict):
    """Answer while the prompt cache has room: new instructions."""

    prompts: list[str] = Field(min_length=1, description="Candidate instructions, best first.")


class Choice(_Strict):
    index: int = Field(description="The listed id of the chosen instruction.")
    prompt: str = Field(description="That instruction's text, copied exactly.")


class FrozenAnswer(_Strict):
    """Answer once the prompt cache is frozen: choices among the listed prompts."""

    choices: list[Choice] = Field(min_length=1, description="Chosen instructions, best first.")


def schema(request: ProposalRequest) -> type[_Strict]:
    return FrozenAnswer if request.frozen else OpenAnswer


def listed(request: ProposalRequest) -> dict[int, str]:
    """The prompts a frozen request offers, by id (reset-to-home is always offered anyway)."""
    return {i: t for i, t in enumerate(request.cached_prompts) if i != RESET_ID}


def user_text(request: ProposalRequest) -> str:
    if not request.frozen:
        return (
            f'Task: "{request.task}".\nPropose {request.n} distinct candidate instructions '
            'for the next step. Answer as JSON: {"prompts": ["...", ...]}.'
        )
    options = "\n".join(f"{i}: {t}" for i, t in listed(request).items())
    return (
        f'Task: "{request.task}".\nThe robot accepts only these instructions, by index:\n'
        f"{options}\nChoose up to {request.n} distinct ones for the next step. Answer as "
        'JSON: {"choices": [{"index": <index>, "prompt": "<its text, copied exactly>"}, ...]}.'
    )


def user_parts(request: ProposalRequest) -> list[str | bytes]:
    """The user turn in order: text, and PNG bytes for each image (history first)."""
    parts: list[str | bytes] = []
    if request.history:
        parts.append("Earlier in this episode, oldest first:")
        for step, item in enumerate(request.history, 1):
            parts += [
                f"Step {step}: the scene, then the robot ran: {item.prompt}",
                png_bytes(item.image),
            ]
    parts += ["The scene now:", png_bytes(request.image), user_text(request)]
    return parts


def instruction_digest() -> str:
    """Changes when what the model is told changes (part of the response-cache key)."""
    text = (
        SYSTEM_INSTRUCTION
        + repr(OpenAnswer.model_json_schema())
        + repr(FrozenAnswer.model_json_schema())
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_answer(text: str | None, request: ProposalRequest, tokens: tuple[int, int]) -> Answer:
    """Validate the model's JSON and turn it into candidate texts (see the module doc)."""
    if not text or not text.strip():
        raise ProposalError("empty", "the answer holds no text", tokens)
    try:
        answer = schema(request).model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        raise ProposalError("malformed", f"{where}: {first['msg']}", tokens) from None
    repaired = rejected = 0
    if isinstance(answer, OpenAnswer):
        texts = [p for p in answer.prompts if normalize_prompt(p)]
    else:
        offered = listed(request)
        by_text = {normalize_prompt(t): i for i, t in offered.items()}
        texts = []
        for choice in answer.choices:
            key = normalize_prompt(choice.prompt)
            if choice.index in offered and key in ("", normalize_prompt(offered[choice.index])):
                texts.append(offered[choice.index])
            elif key in by_text:
                repaired += 1
                texts.append(offered[by_text[key]])
            else:
                rejected += 1
                log.warning(
                    "VLM chose a prompt outside the frozen cache (index %d, %r); rejected",
                    choice.index,
                    choice.prompt[:80],
                )
    unique = list({normalize_prompt(t): t for t in texts}.values())[: request.n]
    return Answer(tuple(unique), tokens[0], tokens[1], repaired, rejected)
