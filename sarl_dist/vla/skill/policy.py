"""The skill VLA: an embedded stand-in for pi0.5 fine-tuned on LIBERO-90.

It hears a prompt (grammar.py: a taught LIBERO-90 skill, a parsed instruction, or a
documented failure), finds the first predicate of that goal the observation does not show
done (goal.py), and answers a 10-step chunk of OSC_POSE deltas toward where that
predicate's skill (skills.py) wants the hand. It acts only from the observation it is
sent (openpi's LIBERO keys plus the `privileged` poses the LIBERO adapter adds) and keeps
no state between requests, like a VLA. Gaussian action noise makes even known skills fail
sometimes; everything random comes from one generator seeded at construction, so a server
with a given seed answers a given sequence of requests identically. How an untaught
sentence is read (grammar.py: `p_partial`, `p_zero_shot`) is drawn from the words and the
observation, not from that generator, so it is the same for every server.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sarl_dist.geometry import orientation_error
from sarl_dist.prompt_text import normalize_prompt
from sarl_dist.vla.skill.goal import Goal, next_unmet
from sarl_dist.vla.skill.grammar import understand
from sarl_dist.vla.skill.skills import Hand, Motion, act, finish, held_object, hold

HORIZON = 10
MIN_SPEED = 0.5  # smallest commanded speed while more than 4 mm from the target
STEP = 0.011  # the arm moves ~11 mm per step at full command (measured)
FINGER_STEP = 0.01  # the finger gap changes ~10 mm per step at full command


class SkillVLA:
    """openpi BasePolicy-compatible: infer(obs) -> {"actions": (10, 7), "skill_phase": str}."""

    def __init__(
        self,
        seed: int = 0,
        action_noise: float = 0.05,
        p_partial: float = 0.2,
        p_zero_shot: float = 0.9,
        gain: float = 20.0,
    ) -> None:
        self.action_noise, self.gain = action_noise, gain
        self.p_partial, self.p_zero_shot = p_partial, p_zero_shot
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def understand(self, prompt: str, scene: dict[str, Any]) -> Goal | None:
        """The goal a prompt means in this scene (None: not understood)."""
        return understand(normalize_prompt(prompt), scene, self.p_partial, self.p_zero_shot)

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        scene = obs.get("privileged")
        if scene is None:
            raise ValueError(
                "the skill VLA needs the 'privileged' observation key (env.libero.privileged)"
            )
        state = np.asarray(obs["observation/state"], dtype=np.float64)
        hand = Hand(
            pos=state[:3],
            quat=np.asarray(scene["eef_quat"], dtype=np.float64),
            width=float(state[6] - state[7]),
            speed=float(np.abs(np.asarray(scene["gripper_qvel"])).max()),
        )
        held = held_object(hand, scene)
        goal = self.understand(str(obs["prompt"]), {**scene, "held": held})
        if goal is None:
            motion = hold(hand)
        else:
            pred = next_unmet(goal, scene, held)
            motion = act(pred, hand, scene) if pred is not None else finish(hand, scene)
        return {"actions": self._chunk(hand, motion), "skill_phase": motion.phase}

    def _chunk(self, hand: Hand, motion: Motion) -> np.ndarray:
        """HORIZON actions toward the target, predicting the arm's progress step by step."""
        rot = np.clip(2.0 * orientation_error(motion.orientation(hand), hand.quat), -0.5, 0.5)
        pos, width = hand.pos.copy(), hand.width
        actions = np.zeros((HORIZON, 7), dtype=np.float32)
        for t in range(HORIZON):
            error = motion.target - pos
            move = np.clip(self.gain * error, -1.0, 1.0)
            speed = np.linalg.norm(move)
            if 0 < speed < MIN_SPEED and np.linalg.norm(error) > 0.004:
                move *= MIN_SPEED / speed  # no slow exponential tail near the target
            move += self._rng.normal(0.0, self.action_noise, size=3)
            actions[t, :3] = np.clip(move, -1.0, 1.0)
            actions[t, 3:6] = rot if t == 0 else 0.0
            if motion.width is None:
                actions[t, 6] = motion.grip
            elif abs(width - motion.width) > 0.004:  # shape the gap, predicting the fingers
                actions[t, 6] = np.sign(width - motion.width)
                width -= FINGER_STEP * actions[t, 6]
            pos = pos + STEP * actions[t, :3]
        return actions
