import math

import numpy as np
import pytest
import torch

from sarl_dist.core.agent import SARLAgent, expected_sarsa_target
from sarl_dist.core.qnet import QEnsemble
from sarl_dist.testing import image_of, make_batch, tiny_config


def test_td_target_by_hand_on_two_states_with_a_masked_candidate():
    # State s1 offers prompts {1, 3}; prompt 2 is not a candidate even though Q(s1, 2) is huge.
    online = torch.tensor([[[0.0, 1.0, 50.0, 0.0]], [[0.0, 2.0, 50.0, 1.0]]])  # (E=2, B=1, K=4)
    target = torch.tensor([[[0.0, 0.8, 9.0, 0.3]], [[0.0, 0.6, 9.0, 0.7]]])
    mask = torch.tensor([[False, True, False, True]])
    gamma, temperature = 0.8, 0.5
    # By hand: mean online Q on {1, 3} = (1.5, 0.5); pi = softmax((3, 1)); min target (0.6, 0.3).
    pi1 = math.exp(3) / (math.exp(3) + math.exp(1))
    expected = 0.0 + gamma * (pi1 * 0.6 + (1 - pi1) * 0.3)
    y = expected_sarsa_target(
        torch.tensor([0.0]), torch.tensor([0.0]), online, target, mask, gamma, temperature
    )
    assert y.item() == pytest.approx(expected, abs=1e-6)
    assert y.item() == pytest.approx(0.451392, abs=1e-5)
    # A terminal transition (reward 1, no next candidates) is just its reward.
    y_done = expected_sarsa_target(
        torch.tensor([1.0]),
        torch.tensor([1.0]),
        online,
        target,
        torch.zeros(1, 4, dtype=bool),
        gamma,
        temperature,
    )
    assert y_done.item() == pytest.approx(1.0)


def test_agent_target_uses_online_mean_for_pi_and_target_min_for_value():
    cfg = tiny_config("q.ensemble=3", "learner.temperature=0.05")
    agent = SARLAgent(6, cfg.q, cfg.learner, gamma=0.9, seed=1)
    for p in agent.target.parameters():  # make target and online differ
        p.data.add_(0.1 * torch.randn_like(p))
    candidates = [[1, 3], [0, 2, 5], []]
    batch = make_batch(
        [1, 2, 3], [1, 2, 4], [0.0, 0.5, 1.0], [0.0, 0.0, 1.0], [2, 3, 4], candidates, 6
    )
    with torch.no_grad():
        nxt = torch.from_numpy(batch.next_image), torch.from_numpy(batch.next_proprio)
        online, target = agent.q(*nxt).numpy(), agent.target(*nxt).numpy()  # (E, B, K)

    def by_hand(pi_from: np.ndarray, value_from: np.ndarray) -> np.ndarray:
        y = batch.reward.astype(np.float64).copy()
        for b, cands in enumerate(candidates):
            if batch.done[b] or not cands:
                continue
            logits = pi_from[b, cands] / cfg.learner.temperature
            pi = np.exp(logits - logits.max())
            y[b] += 0.9 * (pi / pi.sum()) @ value_from[b, cands]
        return y

    right = by_hand(online.mean(0), target.min(0))
    got = agent.td_target(batch).numpy()
    assert got == pytest.approx(right, rel=1e-5, abs=1e-5)
    assert got[2] == pytest.approx(1.0)  # terminal: just the reward
    # The test tells the rule apart from its near misses.
    for wrong in (
        by_hand(target.mean(0), target.min(0)),  # pi from the target networks
        by_hand(online.mean(0), online.min(0)),  # value from the online networks
        by_hand(online.mean(0), target.mean(0)),  # mean instead of min over members
    ):
        assert not np.allclose(got, wrong, atol=1e-3)


def test_gradients_are_clipped_per_member():
    torch.manual_seed(0)
    q = QEnsemble(num_prompts=4, members=3, hidden=16, image_features=8)
    images = torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8)
    out = q(images, torch.randn(8, 8))  # (E, B, K)
    (1e4 * out[0].sum() + 1e-3 * out[1:].sum()).backward()  # member 0 spikes

    def member_norms() -> torch.Tensor:
        sq = torch.zeros(3)
        for name, p in q.named_parameters():
            if name.startswith("cnns."):
                sq[int(name.split(".")[1])] += p.grad.pow(2).sum()
            else:
                sq += p.grad.pow(2).flatten(1).sum(1)
        return sq.sqrt()

    before = member_norms()
    assert before[0] > 10 and (before[1:] < 1).all()
    assert torch.allclose(q.clip_grad_norm_per_member_(1.0), before)
    after = member_norms()
    assert after[0] == pytest.approx(1.0, rel=1e-4)  # the spike is clipped
    assert torch.allclose(after[1:], before[1:])  # the others keep their steps


def test_learns_the_values_of_a_two_state_chain():
    # s0 --p1--> s1 --p2--> success; p2 at s0 and p1 at s1 waste a decision.
    s0, s1 = 0, 200
    batch = make_batch(
        states=[s0, s0, s1, s1],
        prompts=[1, 2, 2, 1],
        rewards=[0, 0, 1, 0],
        dones=[0, 0, 1, 0],
        next_states=[s1, s0, s1, s1],
        next_candidates=[[1, 2], [1, 2], [], [1, 2]],
        num_prompts=4,
    )
    cfg = tiny_config("learner.temperature=0.02", "learner.lr=0.003", "learner.target.tau=0.05")
    agent = SARLAgent(4, cfg.q, cfg.learner, gamma=0.8, seed=0)
    for _ in range(1500):
        agent.update(batch)
    with torch.no_grad():
        q = agent.q(
            torch.from_numpy(np.stack([image_of(s0), image_of(s1)])), torch.zeros(2, 8)
        ).mean(0)
    # Greedy fixed point: Q(s1,p2)=1, Q(s1,p1)=0.8, Q(s0,p1)=0.8, Q(s0,p2)=0.64.
    assert q[1, 2].item() == pytest.approx(1.0, abs=0.08)
    assert q[1, 1].item() == pytest.approx(0.8, abs=0.08)
    assert q[0, 1].item() == pytest.approx(0.8, abs=0.08)
    assert q[0, 2].item() == pytest.approx(0.64, abs=0.08)


def test_hard_target_updates_copy_only_every_period():
    cfg = tiny_config("learner.target.mode=hard", "learner.target.period=3")
    agent = SARLAgent(4, cfg.q, cfg.learner, gamma=0.8, seed=0)
    batch = make_batch([1], [1], [1.0], [1.0], [2], [[]], num_prompts=4)
    before = [p.clone() for p in agent.target.parameters()]
    agent.update(batch)
    agent.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.target.parameters(), strict=True))
    agent.update(batch)
    assert all(
        torch.equal(a, b)
        for a, b in zip(agent.q.parameters(), agent.target.parameters(), strict=True)
    )


def test_state_round_trip_restores_weights_targets_optimiser_and_count():
    cfg = tiny_config()
    agent = SARLAgent(4, cfg.q, cfg.learner, gamma=0.8, seed=0)
    batch = make_batch([1, 2], [1, 3], [0.0, 1.0], [0.0, 1.0], [2, 3], [[1, 3], []], num_prompts=4)
    for _ in range(3):
        agent.update(batch)
    other = SARLAgent(4, cfg.q, cfg.learner, gamma=0.8, seed=5)
    other.load_state_bytes(agent.state_bytes())
    assert other.updates == 3
    agent.update(batch)
    other.update(batch)  # identical optimiser state -> identical step
    for a, b in zip(agent.q.parameters(), other.q.parameters(), strict=True):
        assert torch.allclose(a, b)


def test_acting_on_one_state_gives_the_q_values_of_the_batched_learning_path():
    # One state runs the members' CNNs as grouped convolutions, a batch runs them one by one.
    torch.manual_seed(0)
    q = QEnsemble(num_prompts=6, members=3)
    images = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    proprio = torch.randn(4, 8)
    with torch.no_grad():
        batched = q(images, proprio)
        for b in range(4):
            one = q(images[b : b + 1], proprio[b : b + 1])
            assert torch.allclose(one[:, 0], batched[:, b], atol=1e-5)
    loss = q(images[:1], proprio[:1]).sum()
    loss.backward()  # the grouped path still trains every member
    assert all(cnn[0].weight.grad.abs().sum() > 0 for cnn in q.cnns)
