import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sarl_dist.config import ConfigError
from sarl_dist.envs import env_spec, make_env
from sarl_dist.skill_chain import NUM_SKILLS, SKILLS, decode_stage
from sarl_dist.testing import tiny_config
from sarl_dist.vla.base import ChunkedVLA, VLAError
from sarl_dist.vla.skill_chain import SkillChainVLA
from sarl_dist.vlm.base import ProposalRequest
from sarl_dist.vlm.skill_chain import SkillChainProposer


def _rollout(env, vla, pick, episodes=200, seed=0):
    rng, wins = np.random.default_rng(seed), 0
    proposer = SkillChainProposer(env.cfg)
    for ep in range(episodes):
        env.reset(ep)
        for _ in range(env.spec.max_decisions):
            obs = env.observe()
            assert decode_stage(obs.image, len(env.skills)) == env.stage
            cands = proposer.propose(ProposalRequest(env.spec.task, obs.scene, (), False, 4))
            prompt = pick(env, cands, rng)
            result = env.run_reset() if prompt is None else env.run_prompt(prompt, vla)
            if result.terminated:
                wins += 1
                break
    return wins / episodes


@pytest.fixture
def env_and_vla():
    cfg = tiny_config()
    env = make_env(cfg)
    return env, ChunkedVLA(SkillChainVLA(cfg.env.skill_chain), 5, env.spec.action_dim)


def test_right_prompts_solve_it_and_uniform_choice_does_not(env_and_vla):
    env, vla = env_and_vla

    def best(env, cands, rng):
        want = SKILLS[env.skills[env.stage]]
        return next((c for c in (want.name, want.paraphrase) if c in cands), cands[0])

    def uniform(env, cands, rng):
        options = [*cands, None]
        return options[rng.integers(len(options))]

    assert _rollout(env, vla, best) >= 0.93
    assert _rollout(env, vla, uniform, episodes=400) <= 0.08


def test_the_task_sentence_alone_never_solves_a_chain(env_and_vla):
    env, vla = env_and_vla
    assert _rollout(env, vla, lambda env, cands, rng: env.spec.task) == 0.0


UNFAMILIAR = [f"extend the sliding compartment {i}" for i in range(40)]


def test_vla_grounding_known_paraphrased_and_unfamiliar():
    cfg = tiny_config().env.skill_chain
    vla = SkillChainVLA(cfg)
    assert vla.ground("Open the drawer.") == (0, 0.95)
    assert vla.ground("pull the drawer open") == (0, 0.4)
    # Unfamiliar words elicit some skill with full effort (a misgrounding, not idling) ...
    groundings = [vla.ground(p) for p in UNFAMILIAR]
    assert {effort for _, effort in groundings} == {cfg.p_canonical}
    assert len({skill for skill, _ in groundings}) >= NUM_SKILLS // 2  # ... by the words,
    # ... the same on every worker: another seed, another process, another hash seed.
    other = SkillChainVLA(cfg, seed=99)
    assert [other.ground(p) for p in UNFAMILIAR] == groundings
    code = (
        "import json, sys; from sarl_dist.vla.skill_chain import SkillChainVLA; "
        "from sarl_dist.testing import tiny_config; "
        "v = SkillChainVLA(tiny_config().env.skill_chain, seed=5); "
        "print(json.dumps([v.ground(p)[0] for p in json.loads(sys.argv[1])]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(UNFAMILIAR)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert json.loads(proc.stdout) == [skill for skill, _ in groundings], proc.stderr


def test_frozen_cache_restricts_the_proposer():
    cfg = tiny_config()
    env = make_env(cfg)
    env.reset(3)
    cached = ("reset to home", SKILLS[env.skills[1]].name)
    req = ProposalRequest(env.spec.task, env.observe().scene, cached, frozen=True, n=4)
    assert set(SkillChainProposer(cfg.env.skill_chain).propose(req)) <= set(cached)


def test_tasks_by_index_and_name_and_unknown_ones():
    by_index = env_spec(tiny_config("env.task=3")).task
    assert env_spec(tiny_config("env.task=chain-3")).task == by_index
    assert env_spec(tiny_config(f"env.task={by_index}")).task == by_index
    with pytest.raises(ConfigError, match=r"env\.task"):
        env_spec(tiny_config("env.task=chain-99"))
    with pytest.raises(ConfigError, match=r"env\.task"):
        env_spec(tiny_config("env.task=make coffee"))


def test_chunked_vla_refuses_wrong_shapes_and_nans():
    class Bad:
        def __init__(self, actions):
            self.actions = actions

        def infer(self, obs):
            return {"actions": self.actions}

        def reset(self):
            pass

    with pytest.raises(VLAError, match="shape"):
        ChunkedVLA(Bad(np.zeros((4, 3))), 2, 7).next_action(dict)
    with pytest.raises(VLAError, match="non-finite"):
        ChunkedVLA(Bad(np.full((4, 7), np.nan)), 2, 7).next_action(dict)


def test_chunked_vla_replans_after_replan_steps_and_observes_lazily():
    calls = []

    class Counting:
        def infer(self, obs):
            calls.append(obs)
            return {"actions": np.arange(10 * 2, dtype=np.float32).reshape(10, 2)}

        def reset(self):
            pass

    vla = ChunkedVLA(Counting(), replan_steps=5, action_dim=2)
    seen = [vla.next_action(lambda: {"n": len(calls)})[0] for _ in range(7)]
    assert len(calls) == 2  # a new observation only when the 5 queued actions ran out
    assert seen == [0, 2, 4, 6, 8, 0, 2]
