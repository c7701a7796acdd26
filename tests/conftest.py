import os

import pytest
import ray
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# In-process gradient steps (tests/test_agent.py) on one thread: with two, a busy second core
# makes torch's threads wait on each other, and a 12 s test took over 600 s.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session (ray.init costs seconds); the driver reuses it."""
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
