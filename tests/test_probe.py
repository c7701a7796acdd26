import imageio
import pytest

from sarl_dist.runtime.probe import probe
from sarl_dist.skill_chain import SKILLS, task_skills
from sarl_dist.testing import tiny_config


def test_probe_scores_a_prompt_sequence_and_writes_labelled_videos(tmp_path):
    cfg = tiny_config("env.max_decisions=5")
    right = [SKILLS[s].name for s in task_skills(0, 3)]
    good = probe(cfg, right, episodes=6, video_dir=tmp_path)
    assert good["success_rate"] >= 0.5
    videos = sorted(tmp_path.glob("*.mp4"))
    assert len(videos) == 6
    frame = imageio.get_reader(videos[0]).get_data(0)
    assert frame[2:10, 2:40].mean() < frame[30:, :].mean()  # the dark prompt banner
    zero = probe(cfg, [], episodes=6)
    assert zero["prompts"] == [zero["task"]] * 5 and zero["success_rate"] == 0.0


def test_probe_refuses_more_prompts_than_decisions():
    with pytest.raises(ValueError, match="max_decisions"):
        probe(tiny_config("env.max_decisions=2"), ["a b", "c d", "e f"], episodes=1)
