import json
import os
import socket
import threading

import pytest
import yaml

from sarl_dist.config import ConfigError, dump_config
from sarl_dist.runtime import checkpoint as ckpt
from sarl_dist.runtime.rundir import RunDir, RunInUseError, config_digest
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
    RunDir.create(tmp_path / "run", tiny_config()).close()
    with pytest.raises(ConfigError, match=r"learner\.lr"):
        RunDir.open(tmp_path / "run", tiny_config("learner.lr=0.01"))
    with pytest.raises(ConfigError, match="already holds a run"):
        RunDir.create(tmp_path / "run", tiny_config())
    assert RunDir.open(tmp_path / "run", tiny_config()).cfg == tiny_config()


def test_one_driver_per_run_directory_and_the_holder_is_named(tmp_path):
    path = tmp_path / "run"
    first = RunDir.create(path, tiny_config())
    for attempt in (lambda: RunDir.open(path), lambda: RunDir.create(path, tiny_config())):
        with pytest.raises(
            RunInUseError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"
        ):
            attempt()
    first.close()  # released: a driver that ends (however it ends) frees the directory
    RunDir.open(path).close()


def test_two_drivers_racing_for_a_new_directory_start_one_run(tmp_path):
    path, results = tmp_path / "new", []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        try:
            results.append(RunDir.create(path, tiny_config(f"seed={i}")))
        except ConfigError as exc:  # in use, or already holds a run
            results.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if isinstance(r, RunDir)]
    assert len(winners) == 1
    assert winners[0].cfg.seed == yaml.safe_load((path / "config.yaml").read_text())["seed"]
    winners[0].close()


def _checkpointed(tmp_path, cfg):
    """A run directory with a checkpoint of `cfg`, as the driver writes it."""
    run = RunDir.create(tmp_path / "run", cfg)
    directory = run.checkpoint_dir(4)
    (directory / "config.yaml").write_text(dump_config(cfg))
    ckpt.seal(directory, {"episodes": 4, "config_sha256": config_digest(cfg)})
    run.close()
    return run.path, directory


def test_an_edited_config_is_refused_on_resume_listing_the_fields(tmp_path):
    path, directory = _checkpointed(tmp_path, tiny_config())
    edited = tiny_config("learner.lr=0.01", "train.episodes=40")
    (path / "config.yaml").write_text(dump_config(edited))
    run = RunDir.open(path)
    meta = ckpt.verify(directory)
    with pytest.raises(ckpt.CheckpointError) as refused:
        run.check_resumed_config(directory, meta, extend=False)
    assert "learner.lr (0.0003 -> 0.01)" in str(refused.value)
    assert "train.episodes (8 -> 40)" in str(refused.value)
    with pytest.raises(ckpt.CheckpointError, match=r"learner\.lr") as still:
        run.check_resumed_config(directory, meta, extend=True)  # extending excuses episodes only
    assert "train.episodes (" not in str(still.value)
    run.close()


def test_extending_a_run_is_the_one_change_a_resume_takes(tmp_path):
    path, directory = _checkpointed(tmp_path, tiny_config())
    run = RunDir.open(path)
    with pytest.raises(ConfigError, match="already configured for 8"):
        run.extend(6)
    run.extend(20)
    assert run.cfg.train.episodes == 20
    with pytest.raises(ckpt.CheckpointError, match=r"train\.episodes \(8 -> 20\)"):
        run.check_resumed_config(directory, ckpt.verify(directory), extend=False)
    run.check_resumed_config(directory, ckpt.verify(directory), extend=True)
    run.close()
    assert RunDir.open(path).cfg.train.episodes == 20  # written to config.yaml


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "replay.npz"
    path.write_bytes(b"old")
    (tmp_path / "replay.npz.tmp").symlink_to("/dev/full")
    with pytest.raises(OSError, match="No space left on device"):
        ckpt.write_atomic(path, b"x" * 100_000)
    assert path.read_bytes() == b"old" and not (tmp_path / "replay.npz.tmp").exists()
