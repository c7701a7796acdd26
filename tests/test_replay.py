import numpy as np
import pytest

from sarl_dist.core.replay import ReplayBuffer
from sarl_dist.testing import make_batch


def _batch(n, offset=0):
    return make_batch(
        [offset + i for i in range(n)],
        [i % 4 for i in range(n)],
        [float(i) for i in range(n)],
        [float(i % 2) for i in range(n)],
        [offset + i + 1 for i in range(n)],
        [[1, 2] for _ in range(n)],
        num_prompts=4,
    )


def test_save_load_round_trip(tmp_path):
    buf = ReplayBuffer(10, 4)
    buf.add(_batch(7))
    buf.add(_batch(6, offset=50))  # wraps around
    (tmp_path / "replay.npz").write_bytes(buf.to_bytes())
    loaded = ReplayBuffer.load(tmp_path / "replay.npz")
    assert (loaded.size, loaded.added, loaded.capacity) == (10, 13, 10)
    for name, arr in buf._data.items():
        assert np.array_equal(arr, loaded._data[name]), name
    loaded.add(_batch(1, offset=99))  # continues the ring where it stopped
    assert loaded._data["image"][3, 0, 0, 0] == 99


def test_ring_overwrites_oldest_and_keeps_dtypes():
    buf = ReplayBuffer(4, 4)
    buf.add(_batch(6))
    assert len(buf) == 4
    assert sorted(buf._data["image"][:, 0, 0, 0]) == [2, 3, 4, 5]
    sample = buf.sample(8, np.random.default_rng(0))
    assert sample.image.dtype == np.uint8 and sample.next_mask.dtype == np.bool_
    assert sample.next_mask.shape == (8, 4)


def test_rejects_a_mask_of_the_wrong_width():
    with pytest.raises(ValueError, match="next_mask"):
        ReplayBuffer(4, 8).add(_batch(2))
