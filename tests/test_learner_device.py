"""learner.device: where the Learner trains, and what its placement bundle asks for."""

import numpy as np
import pytest
import torch

from sarl_dist.config import ConfigError
from sarl_dist.core.agent import SARLAgent, resolve_device
from sarl_dist.core.qnet import weights_to_numpy
from sarl_dist.core.replay import Batch
from sarl_dist.runtime.actors import placement_bundles
from sarl_dist.testing import make_batch, tiny_config

BATCH = make_batch(
    [1, 2, 3, 4], [0, 1, 2, 3], [0.0, 0.5, 1.0, 0.0], [0, 0, 1, 0], [2, 3, 4, 5],
    [[1, 3], [0, 2], [], [1]], 4,
)  # fmt: skip


def _train(device: str, steps: int = 5) -> tuple[list[float], dict[str, np.ndarray]]:
    cfg = tiny_config("q.ensemble=3", f"learner.device={device}")
    agent = SARLAgent(4, cfg.q, cfg.learner, gamma=0.9, seed=3)
    losses = [agent.update(BATCH).loss for _ in range(steps)]
    return losses, weights_to_numpy(agent.q)


def test_auto_without_a_gpu_trains_exactly_as_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    (cpu_losses, cpu_weights), (auto_losses, auto_weights) = _train("cpu"), _train("auto")
    assert cpu_losses == auto_losses
    assert all(np.array_equal(cpu_weights[k], auto_weights[k]) for k in cpu_weights)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_trains_like_cpu_and_publishes_cpu_numpy():
    # In full float32: cuDNN's TF32 convolutions (torch's default on a GPU, kept for runs)
    # move the weights up to 1.5e-4 apart in five steps (H200, docs/performance.md), a
    # tolerance that could hide a wrong computation.
    cpu_losses, cpu_weights = _train("cpu")
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        gpu_losses, gpu_weights = _train("cuda")
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-4, atol=1e-5)
    for name, weight in gpu_weights.items():
        assert isinstance(weight, np.ndarray)
        np.testing.assert_allclose(weight, cpu_weights[name], rtol=1e-3, atol=1e-4)


def test_cuda_without_a_gpu_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"learner\.device=cuda"):
        resolve_device("cuda")


def test_a_batch_crosses_to_the_device_in_one_transfer_per_field(monkeypatch):
    cfg = tiny_config("q.ensemble=2", "learner.device=cpu")
    agent = SARLAgent(4, cfg.q, cfg.learner, gamma=0.9, seed=0)
    moved = []
    original = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and isinstance(args[0], torch.device):
            moved.append(tuple(self.shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    agent.update(BATCH)
    fields = len(vars(BATCH))
    assert len(moved) == fields == len(Batch.__dataclass_fields__)
    assert all(shape[0] == len(BATCH) for shape in moved)  # whole fields, never a sample


def test_the_learner_bundle_asks_for_a_gpu_only_when_it_trains_on_one(monkeypatch):
    assert "GPU" not in placement_bundles(tiny_config("learner.device=cpu"))[0]
    assert placement_bundles(tiny_config("learner.device=cuda"))[0]["GPU"] == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "GPU" not in placement_bundles(tiny_config("learner.device=auto"))[0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert placement_bundles(tiny_config("learner.device=auto"))[0]["GPU"] == 1


def test_an_unknown_device_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"learner\.device"):
        tiny_config("learner.device=tpu")
