import json

import pytest

from sarl_dist.config import ConfigError
from sarl_dist.runtime import checkpoint as ckpt
from sarl_dist.runtime.rundir import RunDir
from sarl_dist.testing import tiny_config


def _sealed(tmp_path):
    directory = tmp_path / "ep-0000004"
    directory.mkdir()
    (directory / "agent.pt").write_bytes(b"weights")
    (directory / "driver.json").write_text(json.dumps({"episodes": 4}))
    ckpt.seal(directory, {"episodes": 4})
    return directory


def test_a_sealed_checkpoint_verifies_and_is_the_latest(tmp_path):
    directory = _sealed(tmp_path)
    assert ckpt.verify(directory) == {"episodes": 4}
    (tmp_path / "ep-0000008").mkdir()  # an unfinished save: no manifest
    assert ckpt.latest(tmp_path) == directory


def test_tampered_truncated_or_unfinished_checkpoints_are_refused(tmp_path):
    directory = _sealed(tmp_path)
    (directory / "agent.pt").write_bytes(b"weightz")
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        ckpt.verify(directory)
    (directory / "agent.pt").unlink()
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        ckpt.verify(directory)
    (directory / ckpt.MANIFEST).unlink()
    with pytest.raises(ckpt.CheckpointError, match="unfinished"):
        ckpt.verify(directory)


def test_resume_refuses_a_run_directory_of_another_config(tmp_path):
    RunDir.create(tmp_path / "run", tiny_config())
    with pytest.raises(ConfigError, match=r"learner\.lr"):
        RunDir.open(tmp_path / "run", tiny_config("learner.lr=0.01"))
    with pytest.raises(ConfigError, match="already holds a run"):
        RunDir.create(tmp_path / "run", tiny_config())
    assert RunDir.open(tmp_path / "run", tiny_config()).cfg == tiny_config()
