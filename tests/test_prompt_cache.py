import pytest

from sarl_dist.core.prompt_cache import (
    MAX_PROMPT_CHARS,
    RESET_ID,
    RESET_PROMPT,
    PromptCache,
    normalize_prompt,
)


def test_normalisation_merges_case_whitespace_and_trailing_punctuation():
    cache = PromptCache(8)
    a = cache.add("Open the  top drawer.")
    assert cache.add("open the top drawer") == a
    assert cache.add("  OPEN THE TOP DRAWER!! ") == a
    assert cache.add("open the bottom drawer") != a
    assert cache.text(a) == "Open the top drawer."  # the first spelling is what the VLA gets
    assert normalize_prompt("Pick   up the bowl ;") == "pick up the bowl"


def test_reset_to_home_is_reserved_slot_zero():
    cache = PromptCache(4, ["pick up the bowl"])
    assert cache.text(RESET_ID) == RESET_PROMPT
    assert cache.lookup("Reset to home.") == RESET_ID
    assert cache.lookup("pick up the bowl") == 1


def test_frozen_when_full_and_nothing_is_evicted():
    cache = PromptCache(3, ["a b", "c d"])
    assert cache.frozen
    assert cache.add("something new") is None
    assert cache.texts == [RESET_PROMPT, "a b", "c d"]
    assert cache.add("C D") == 2  # known prompts still resolve


def test_ids_survive_save_and_restore(tmp_path):
    cache = PromptCache(32, ["pick up the bowl", "open the drawer"])
    ids = {t: cache.add(t) for t in ["close the drawer", "turn on the stove"]}
    cache.save(tmp_path / "cache.json")
    restored = PromptCache.load(tmp_path / "cache.json")
    assert restored.texts == cache.texts
    assert all(restored.lookup(t) == i for t, i in ids.items())
    assert restored.add("a new prompt") == len(cache)


def test_a_tampered_saved_cache_is_refused():
    with pytest.raises(ValueError, match="reset-to-home"):
        PromptCache.from_state({"capacity": 4, "texts": ["pick up the bowl"]})
    with pytest.raises(ValueError, match="duplicate"):
        PromptCache.from_state({"capacity": 4, "texts": [RESET_PROMPT, "a b", "A b."]})


@pytest.mark.parametrize("bad", ["", "   ", "...", "x" * (MAX_PROMPT_CHARS + 1)])
def test_empty_or_huge_prompts_are_refused(bad):
    with pytest.raises(ValueError, match="prompt"):
        PromptCache(4).add(bad)
