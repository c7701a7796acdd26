from pathlib import Path

import pytest

from sarl_dist.config import Config, ConfigError, build_config, load_config
from sarl_dist.testing import run_sarl

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_follow_sarl():
    cfg = Config()
    assert cfg.cache.capacity == 32 and cfg.q.ensemble == 10 and cfg.q.hidden == 128
    assert cfg.q.layers == 3 and cfg.vlm.candidates == 4
    assert cfg.gamma == pytest.approx(1 - 1 / 5)  # H = 5 decisions


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("cache.capacity=1", "cache.capacity"),
        ("learner.lrr=0.1", "learner.lrr"),
        ("env.max_decisions=many", "env.max_decisions"),
        ("method=dqn", "method"),
        ("learner.target.mode=sometimes", "learner.target.mode"),
    ],
)
def test_bad_values_name_the_field(tmp_path, override, field):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(path, [override])


def test_overrides_read_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learner:\n  lr: 0.01\n")
    cfg = load_config(path, ["learner.lr=0.002", "cache.seed_prompts=[open the drawer]"])
    assert cfg.learner.lr == 0.002 and cfg.cache.seed_prompts == ("open the drawer",)


def test_malformed_yaml_and_non_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_too_many_seed_prompts_for_the_cache():
    with pytest.raises(ConfigError, match=r"cache\.capacity"):
        load_config(None, ["cache.capacity=2", "cache.seed_prompts=[a b, c d]"])


def test_a_run_that_would_measure_nothing_is_refused():
    with pytest.raises(ConfigError, match=r"eval\.at_start=false with train\.episodes=0"):
        load_config(None, ["method=oracle", "train.episodes=0", "eval.at_start=false"])
    assert load_config(None, ["method=oracle", "train.episodes=0"]).eval.at_start


def test_cli_stops_on_a_bad_config_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    args = ["train", str(CONFIGS / "skill_chain.yaml"), "--set", "cache.capacity=1"]
    proc = run_sarl(*args, "--out", str(out), timeout=60)
    assert proc.returncode == 2
    assert "cache.capacity" in proc.stderr
    assert not out.exists()


def test_a_moved_field_loads_in_its_new_place_and_both_places_at_once_is_refused(caplog):
    # A run directory written before learner.bootstrap_on_timeout became
    # env.bootstrap_truncated still loads (sarl report, --resume), saying where it went.
    for value in (False, True):
        cfg = build_config({"learner": {"bootstrap_on_timeout": value}})
        assert cfg.env.bootstrap_truncated is value
    assert "learner.bootstrap_on_timeout is now env.bootstrap_truncated" in caplog.text
    both = {"learner": {"bootstrap_on_timeout": True}, "env": {"bootstrap_truncated": False}}
    with pytest.raises(ConfigError, match=r"learner\.bootstrap_on_timeout"):
        build_config(both)
