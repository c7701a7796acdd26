import numpy as np
import torch

from sarl_dist.core.policy import masked_softmax
from sarl_dist.methods import greedy_choice, softmax_choice, uniform_choice


def test_softmax_never_selects_a_non_candidate():
    rng = np.random.default_rng(0)
    q = np.array([0.0, 100.0, 0.2, 0.1, 100.0])  # the two best prompts are not offered
    candidates = np.array([0, 2, 3])
    picks = [softmax_choice(q, candidates, temperature=0.1, rng=rng) for _ in range(5000)]
    assert set(picks) <= {0, 2, 3}
    counts = np.bincount(picks, minlength=5)
    # softmax(0, 2, 1) over the candidates: 0.665 for prompt 2.
    assert abs(counts[2] / 5000 - 0.665) < 0.03


def test_masked_softmax_puts_no_mass_outside_the_mask_and_handles_empty_rows():
    q = torch.tensor([[5.0, 1.0, 9.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    pi = masked_softmax(q, mask, temperature=1.0)
    assert pi[0, 2] == 0
    assert torch.allclose(pi[0].sum(), torch.tensor(1.0))
    assert torch.equal(pi[1], torch.zeros(3))


def test_greedy_and_uniform_stay_in_the_candidate_set():
    q = np.array([3.0, 0.5, 2.0, 9.0])
    assert greedy_choice(q, np.array([1, 2])) == 2
    rng = np.random.default_rng(1)
    picks = {uniform_choice(np.array([1, 2]), rng) for _ in range(200)}
    assert picks == {1, 2}
