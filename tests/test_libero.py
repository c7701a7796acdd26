"""LIBERO scenes with real MuJoCo physics, the skill VLA, the template proposer."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sarl_dist.config import ConfigError
from sarl_dist.envs import env_spec, make_env, rendering
from sarl_dist.libero_setup import ensure_libero_config
from sarl_dist.testing import tiny_config
from sarl_dist.vla.base import ChunkedVLA
from sarl_dist.vla.skill import SkillVLA
from sarl_dist.vlm.template import decompose

LIBERO = ["env.kind=libero", "env.decision_steps=120", "vla.kind=skill", "vlm.backend=template"]
SOUP = "pick up the alphabet soup and put it in the basket"
SAUCE = "pick up the tomato sauce and put it in the basket"


@pytest.fixture(scope="module")
def env():
    e = make_env(tiny_config(*LIBERO))
    yield e
    e.close()


def test_tasks_by_index_or_name_and_clear_errors():
    spec = env_spec(tiny_config(*LIBERO))
    assert spec.task == "put both the alphabet soup and the tomato sauce in the basket"
    assert (spec.max_decisions, spec.decision_steps, spec.action_dim) == (5, 120, 7)
    by_name = env_spec(tiny_config(*LIBERO, f"env.task={spec.task}"))
    assert by_name.task == spec.task
    with pytest.raises(ConfigError, match=r"env\.libero\.suite"):
        env_spec(tiny_config(*LIBERO, "env.libero.suite=libero_11"))
    with pytest.raises(ConfigError, match=r"env\.task"):
        env_spec(tiny_config(*LIBERO, "env.task=make coffee"))
    with pytest.raises(ConfigError, match=r"env\.task"):
        env_spec(tiny_config(*LIBERO, "env.task=10"))


def test_renderer_choice(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(rendering, "_has_nvidia", lambda: True)
    assert rendering.choose_renderer() == "egl"
    monkeypatch.setattr(rendering, "_has_nvidia", lambda: False)
    monkeypatch.setattr(rendering.ctypes.util, "find_library", lambda name: "libOSMesa.so.8")
    assert rendering.choose_renderer() == "osmesa"
    monkeypatch.setattr(rendering.ctypes.util, "find_library", lambda name: None)
    assert rendering.choose_renderer() == "egl_surfaceless"
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert rendering.choose_renderer() == "osmesa"
    assert rendering.choose_renderer("egl") == "egl"


def test_libero_import_never_asks_and_config_lives_where_we_say(tmp_path):
    code = (
        "from sarl_dist.envs import env_spec; from sarl_dist.testing import tiny_config; "
        "print(env_spec(tiny_config('env.kind=libero')).task)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SARL_LIBERO_CONFIG": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "alphabet soup" in proc.stdout
    assert (tmp_path / "config.yaml").is_file()


def test_a_config_naming_another_installation_is_rewritten(tmp_path, monkeypatch):
    # A venv replaced by one for another Python leaves a config.yaml naming the old one.
    monkeypatch.setenv("SARL_LIBERO_CONFIG", str(tmp_path))
    monkeypatch.setenv("LIBERO_CONFIG_PATH", "restored after the test")
    gone = "/gone/.venv/lib/python3.11/site-packages/libero/libero"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"bddl_files": f"{gone}/bddl_files", "init_states": gone}))
    ensure_libero_config()
    paths = yaml.safe_load(path.read_text())
    assert Path(paths["bddl_files"]).is_dir() and Path(paths["init_states"]).is_dir()
    written = path.stat().st_mtime_ns
    ensure_libero_config()  # a file naming this installation is left as it is
    assert path.stat().st_mtime_ns == written
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_observations_and_render_on_demand(env, monkeypatch):
    env.reset(0)
    obs = env.observe()
    assert obs.image.shape == (64, 64, 3) and obs.image.dtype == np.uint8
    assert obs.scene.shape == (256, 256, 3) and obs.proprio.shape == (8,)
    vla_obs = env.vla_observation("x")
    assert vla_obs["observation/state"].shape == (8,)
    scene = vla_obs["privileged"]
    assert {"alphabet_soup_1", "tomato_sauce_1", "basket_1"} <= set(scene["objects"])
    assert "basket_1_contain_region" in scene["sites"]
    renders = []
    real = env.render
    monkeypatch.setattr(env, "render", lambda cam, size: renders.append(cam) or real(cam, size))

    class Still:
        def infer(self, obs):
            return {"actions": np.tile([0, 0, 0, 0, 0, 0, -1.0], (10, 1))}

        def reset(self):
            pass

    env.run_prompt("hold", ChunkedVLA(Still(), 5, 7))
    assert renders == []  # 120 physics steps, no camera
    monkeypatch.setattr(env, "lcfg", env.lcfg.model_copy(update={"vla_images": True}))
    vla_obs = env.vla_observation("x")
    assert vla_obs["observation/image"].shape == (224, 224, 3)
    assert vla_obs["observation/wrist_image"].shape == (224, 224, 3)
    assert renders == ["agentview", "robot0_eye_in_hand"]


def test_skill_vla_solves_task_0_with_atomic_prompts_but_not_with_the_task(env):
    """Without zero-shot carry-over (test_skill_vla has it) the sentence stays one skill."""
    vla = ChunkedVLA(SkillVLA(seed=0, p_zero_shot=0.0), 5, 7)
    env.reset(0)
    assert not env.run_prompt(SOUP, vla).terminated
    assert env.run_prompt(SAUCE, vla).terminated
    env.reset(0)
    for _ in range(2):
        env.run_prompt(env.spec.task, vla)
    assert not env.success()


def test_one_forward_per_substep_keeps_the_trajectory(env, monkeypatch):
    """robosuite's repeated mj_forward on an unchanged state is skipped (OnceForward): a
    third fewer forwards, the same outcome and end state to solver precision; with
    `libero.stock_stepping` robosuite steps as shipped."""
    stock = make_env(tiny_config(*LIBERO, "env.libero.stock_stepping=true"))
    sim_class = type(env.sim)
    forward, calls = sim_class.forward, []
    monkeypatch.setattr(sim_class, "forward", lambda sim: calls.append(1) or forward(sim))

    def trajectory(e) -> tuple[np.ndarray, bool, int]:
        calls.clear()
        e.reset(0, init_index=2)
        done = e.run_prompt(SOUP, ChunkedVLA(SkillVLA(seed=0), 5, 7)).terminated
        return e.sim.get_state().flatten(), done, len(calls)

    once, once_done, once_calls = trajectory(env)
    twice, twice_done, twice_calls = trajectory(stock)
    stock.close()
    assert once_done == twice_done and np.abs(once - twice).max() < 1e-4
    assert once_calls < 0.6 * twice_calls


def test_an_episode_starts_alike_whatever_the_last_one_left():
    """robosuite's gripper keeps its command ramp across resets: an episode that ended
    gripping made the next one's settling differ from a fresh simulator's (by 2 mm)."""
    e = make_env(tiny_config(*LIBERO))
    e.reset(0, init_index=2)
    fresh = e.sim.get_state().flatten()
    for _ in range(30):
        e.step(np.array([0.2, 0.0, -0.3, 0, 0, 0, 1.0]))  # ends with the gripper closing
    e.reset(0, init_index=2)
    assert np.array_equal(e.sim.get_state().flatten(), fresh)
    e.close()


def test_an_init_index_picks_the_benchmarks_fixed_init_state(env):
    env.reset(123, init_index=3)
    assert env.init_index == 3
    soup = env.privileged()["objects"]["alphabet_soup_1"].copy()
    env.reset(456, init_index=3)  # the seed does not move what the init state fixes
    np.testing.assert_allclose(env.privileged()["objects"]["alphabet_soup_1"], soup, atol=1e-3)
    env.reset(123)
    assert env.init_index == int(np.random.default_rng(123).integers(len(env.init_states)))


def test_reset_to_home_returns_the_arm(env):
    env.reset(1)
    for _ in range(40):
        env.step(np.array([0.4, 0.3, -0.5, 0, 0, 0, -1.0]))
    assert np.linalg.norm(env.state()[:3] - env.home) > 0.1
    env.run_reset()
    assert np.linalg.norm(env.state()[:3] - env.home) < 0.02


@pytest.mark.parametrize(
    ("task", "steps"),
    [
        ("put both the alphabet soup and the tomato sauce in the basket", [SOUP, SAUCE]),
        (
            "turn on the stove and put the moka pot on it",
            ["turn on the stove", "put the moka pot on the stove"],
        ),
        (
            "put the black bowl in the bottom drawer of the cabinet and close it",
            [
                "put the black bowl in the bottom drawer of the cabinet",
                "close the bottom drawer of the cabinet",
            ],
        ),
        (
            "pick up the book and place it in the back compartment of the caddy",
            ["pick up the book and place it in the back compartment of the caddy"],
        ),
        (
            "put the yellow and white mug in the microwave and close it",
            ["put the yellow and white mug in the microwave", "close the microwave"],
        ),
        (
            "put both moka pots on the stove",
            [
                "pick up the left moka pot and put it on the stove",
                "pick up the right moka pot and put it on the stove",
            ],
        ),
        (
            "open the top drawer and put the bowl inside",
            ["open the top drawer", "put the bowl in the top drawer"],
        ),
    ],
)
def test_template_decompositions(task, steps):
    assert decompose(task) == steps


@pytest.mark.usefixtures("ray_cluster")
def test_sarl_on_libero_through_the_served_skill_vla(tmp_path):
    from sarl_dist.runtime.driver import run_training
    from sarl_dist.runtime.rundir import RunDir

    cfg = tiny_config(
        *LIBERO,
        "env.decision_steps=30",
        "env.max_decisions=2",
        "runtime.num_workers=1",
        "train.episodes=2",
        "eval.every=2",
        "eval.episodes=1",
        "eval.videos=1",
    )
    run = RunDir.create(tmp_path / "run", cfg)
    summary = run_training(cfg, run, show_progress=False)
    episodes = run.read_jsonl("episodes.jsonl")
    assert summary["episodes"] == 2 and len(episodes) == 2
    assert all(e["steps"] > 0 and e["seconds"]["vla"] > 0 for e in episodes)
    for e in episodes:  # the time budget accounts for the whole episode, every item timed
        seconds = e["seconds"]  # (which item is largest is benchmarks/libero_budget.py's)
        assert sum(seconds.values()) == pytest.approx(e["wall_seconds"], rel=1e-6)
        assert seconds["other"] >= 0
        assert all(seconds[k] > 0 for k in ("physics", "observe", "q", "vlm"))
    budget = summary["decision_ms"]
    assert set(budget) == {"physics", "observe", "vla", "q", "vlm", "other"}
    decisions = sum(e["decisions"] for e in episodes)
    assert sum(budget.values()) == pytest.approx(
        1e3 * sum(e["wall_seconds"] for e in episodes) / decisions, rel=0.01
    )
    assert summary["vlm_calls"] > 0
    videos = sorted(p.name for p in (run.path / "videos").glob("*.mp4"))  # at 0 and at 2
    assert [v[:13] for v in videos] == ["eval-00000-00", "eval-00002-00"]
    assert all((run.path / "videos" / v).stat().st_size > 1000 for v in videos)


def test_the_proposer_offers_every_step_of_the_atomic_sequences():
    """Each prompt of a task's atomic sequence is a decomposition step, which the template
    proposer offers first in every query, so SARL can learn the sequence; libero_goal's
    bowl, set aside first, is moved by words the proposer offers in that scene."""
    from sarl_dist.envs.libero import ORACLE_PROMPTS
    from sarl_dist.vlm import make_proposer
    from sarl_dist.vlm.base import ProposalRequest

    goal_task = "open the top drawer and put the bowl inside"
    for task, prompts in ORACLE_PROMPTS.items():
        if len(decompose(task)) > 1 and task != goal_task:
            assert set(prompts) <= set(decompose(task)), task
    steps, prompts = decompose(goal_task), ORACLE_PROMPTS[goal_task]
    assert prompts[-len(steps) :] == tuple(steps)
    proposer = make_proposer(tiny_config(*LIBERO, "env.libero.suite=libero_goal", "env.task=3"))
    offered = set()
    for value in range(64):  # the scene's other offers come with the image
        image = np.full((8, 8, 3), value, np.uint8)
        offered.update(proposer.propose(ProposalRequest(goal_task, image, (), False, 4)))
    assert set(prompts) <= offered
    for task in (
        "turn on the stove and put the moka pot on it",
        "put the black bowl in the bottom drawer of the cabinet and close it",
        "put both moka pots on the stove",
        "put the yellow and white mug in the microwave and close it",
    ):
        assert len(decompose(task)) > 1 and set(ORACLE_PROMPTS[task]) <= set(decompose(task))
