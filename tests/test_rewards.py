import math

import pytest

from mathrecipe.rewards import (
    CosineReward,
    LengthPenalty,
    boxed_before_think,
    completion_text,
    cosine_scaled,
    format_reward,
    kimi_length_penalty,
)

GOOD = "<think>\n1 + 1 = 2\n\\boxed{2}\n</think>\nThe answer is \\boxed{2}."
AFTER = "<think>\n1 + 1 = 2\n</think>\nThe answer is \\boxed{2}."


def test_format_rule():
    assert boxed_before_think(GOOD)
    assert not boxed_before_think(AFTER)  # boxed only after </think>
    assert not boxed_before_think("<think>\\boxed{2}")  # never closed the reasoning
    assert format_reward([GOOD, AFTER, "", [{"role": "assistant", "content": GOOD}]]) == [1.0, 0.0, 0.0, 1.0]


def test_completion_text_accepts_strings_and_messages():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "abc"}]) == "abc"
    with pytest.raises(TypeError):
        completion_text(3)


@pytest.mark.parametrize(
    "length, correct, expected",
    [(0, True, 1.0), (100, True, 0.1), (0, False, -1.0), (100, False, -0.1), (50, True, 0.55), (50, False, -0.55)],
)
def test_cosine_end_points(length, correct, expected):
    assert cosine_scaled(length, 100, correct) == pytest.approx(expected)


def test_cosine_is_clamped_past_max_len():
    assert cosine_scaled(500, 100, True) == pytest.approx(0.1)
    assert cosine_scaled(500, 100, False) == pytest.approx(-0.1)


def test_cosine_monotone():
    ok = [cosine_scaled(L, 100, True) for L in range(0, 130, 5)]
    bad = [cosine_scaled(L, 100, False) for L in range(0, 130, 5)]
    assert all(a >= b for a, b in zip(ok, ok[1:]))  # shorter correct answers earn more
    assert all(a <= b for a, b in zip(bad, bad[1:]))  # longer wrong attempts cost less
    assert min(ok) > max(bad)  # any correct answer beats any wrong one


def test_cosine_custom_end_values():
    assert cosine_scaled(0, 10, True, max_value_correct=2.0) == pytest.approx(2.0)
    assert cosine_scaled(10, 10, False, min_value_wrong=-0.5) == pytest.approx(-0.5)


def test_cosine_reward_tokens_vs_chars():
    r_tok = CosineReward(max_len=10)
    r_chr = CosineReward(max_len=len(GOOD), unit="chars")
    ids = [[1] * 5]
    assert r_tok([GOOD], answer=["2"], completion_ids=ids) == pytest.approx([0.55])
    assert r_chr([GOOD], answer=["2"]) == pytest.approx([0.1])  # L = max_len chars
    with pytest.raises(ValueError, match="completion_ids"):
        r_tok([GOOD], answer=["2"])


def test_cosine_reward_uses_grading():
    r = CosineReward(max_len=10)
    out = r([GOOD, GOOD], answer=["2", "3"], completion_ids=[[0] * 10, [0] * 10])
    assert out == pytest.approx([0.1, -0.1])
    with pytest.raises(ValueError, match="max_len"):
        CosineReward(max_len=0)


def test_kimi_group_formula():
    # lambda = 0.5 - (L - 10) / (30 - 10)
    out = kimi_length_penalty([10, 20, 30], [True, True, True])
    assert out == pytest.approx([0.5, 0.0, -0.5])
    out = kimi_length_penalty([10, 20, 30], [False, False, False])
    assert out == pytest.approx([0.0, 0.0, -0.5])  # wrong: min(0, lambda)
    assert kimi_length_penalty([7, 7, 7], [True, False, True]) == [0.0, 0.0, 0.0]


def test_length_penalty_is_per_group_not_per_batch():
    lp = LengthPenalty(group_size=2)
    comps = [GOOD] * 4
    # group 1: lengths 10, 20; group 2: lengths 100, 200 -- each normalised within itself
    out = lp(comps, answer=["2"] * 4, completion_ids=[[0] * 10, [0] * 20, [0] * 100, [0] * 200])
    assert out == pytest.approx([0.5, -0.5, 0.5, -0.5])


def test_length_penalty_rejects_broken_groups():
    lp = LengthPenalty(group_size=4)
    with pytest.raises(ValueError, match="num_generations=4"):
        lp([GOOD] * 6, answer=["2"] * 6, completion_ids=[[0]] * 6)
    lp2 = LengthPenalty(group_size=2)
    with pytest.raises(ValueError, match="share one prompt"):
        lp2([GOOD] * 2, answer=["2"] * 2, completion_ids=[[0], [0, 0]], prompts=["a", "b"])
    with pytest.raises(ValueError, match="group_size"):
        LengthPenalty(group_size=1)


def test_total_reward_ranks_short_correct_first():
    """format + cosine + length: the short correct answer scores highest in its group."""
    short, long_ = GOOD, GOOD.replace("\\boxed{2}\n</think>", "Wait, let me verify.\n1 + 1 = 2\n\\boxed{2}\n</think>")
    comps, ids, ans = [short, long_], [[0] * 20, [0] * 40], ["2", "2"]
    total = [
        a + b + c
        for a, b, c in zip(format_reward(comps), CosineReward(max_len=60)(comps, ans, ids),
                           LengthPenalty(2)(comps, ans, ids))
    ]
    assert total[0] > total[1]
    assert math.isfinite(sum(total))


# The authors' format2 (kaggle-aimo2-fast-math-r1, finetune/grpo_rewards.py `format_reward2`), matched as they did.
AUTHORS_FORMAT = r"^.*?oxed{(.*?)}.*?</think>.*?$"
# mathrecipe's rule: an answer the grader extracts from the text before the first </think>
CASES = {
    "The sum is 5. \\boxed{} </think> The answer is 5.": 0.0,  # an empty box is no answer
    "I am done. </think> So \\boxed{5} </think>": 0.0,  # after the first </think>: inference stopped there
    "The sum is 5, so \\boxed 5 </think>": 1.0,  # LaTeX's one-token box: the grader reads 5
    "The sum is 5, so \\fbox{5} </think>": 1.0,  # the grader's box too
}


def _readme_format_table() -> dict[str, tuple[float, float]]:
    """{completion: (authors' regex, mathrecipe)} from the format-reward table of recipes/paper/README.md."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "recipes" / "paper" / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| ([01]) \| ([01]) \|", text, re.MULTILINE)
    return {c: (float(a), float(m)) for c, a, m in rows}


@pytest.mark.parametrize("completion, expected", list(CASES.items()))
def test_format_reward_on_the_completions_where_the_authors_regex_differs(completion, expected):
    """17.7c: the rule is the authors' reason (inference stops at the first </think>, so an answer must stand before
    it), read with the grader's extraction; on these four the authors' regex says the opposite."""
    import re

    assert format_reward([completion]) == [expected]
    assert bool(re.match(AUTHORS_FORMAT, completion, re.DOTALL)) is (expected == 0.0)


def test_paper_readme_lists_every_difference_from_the_authors_format_reward():
    """Each listed completion scores as the README says under both rules, and the four differences are listed."""
    import re

    table = _readme_format_table()
    assert set(CASES) <= set(table)
    for completion, (authors, ours) in table.items():
        assert float(bool(re.match(AUTHORS_FORMAT, completion, re.DOTALL))) == authors, completion
        assert format_reward([completion]) == [ours], completion


# ------------------------------------------------------------------------------------- rewards by name (19.1)


@pytest.mark.parametrize("old, new", [("format_weight", "format.weight"), ("cosine_weight", "cosine.weight"),
                                      ("length_weight", "length.weight")])
def test_old_reward_weight_keys_name_the_new_ones(old, new):
    from mathrecipe.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=rf"rewards\.{old} was renamed: use rewards\.{new}"):
        load_recipe(None, [f"rewards.{old}=2"])


def test_a_mistyped_reward_or_option_is_named_with_the_fix():
    from mathrecipe.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=r"unknown reward 'rewards.cosin'. did you mean 'rewards.cosine'"):
        load_recipe(None, ["rewards.cosin.max_len=40"])
    with pytest.raises(RecipeError, match=r"'rewards.cosine.maxlen'. did you mean 'rewards.cosine.max_len'"):
        load_recipe(None, ["rewards.cosine.maxlen=40"])


def test_the_builtin_rewards_are_the_papers_three_in_trl_call_order():
    """Part A changes nothing the toy computes: format, cosine (160 tokens), length, weights 1, then the zero-weight
    accuracy monitor -- the functions and weights TRL received before the registry."""
    from mathrecipe.grpo import build_rewards
    from mathrecipe.recipe import load_recipe

    funcs, weights = build_rewards(load_recipe(None))
    assert [f.__name__ for f in funcs] == ["format", "cosine", "length", "accuracy"]
    assert weights == [1.0, 1.0, 1.0, 0.0]
    assert (funcs[1].max_len, funcs[1].unit, funcs[1].values) == (160, "tokens", dict(
        min_value_correct=0.1, max_value_correct=1.0, min_value_wrong=-0.1, max_value_wrong=-1.0))
    assert (funcs[2].group_size, funcs[2].unit) == (8, "tokens")


def test_every_registered_reward_is_built_by_name_and_logged_under_it():
    """TRL logs a reward as rewards/<its __name__>/mean; the health monitor and the report read that name."""
    from mathrecipe.rewards import REWARDS, RewardContext, build_reward

    ctx = RewardContext(num_generations=2, measured={"truncation": 30})
    for name, spec in REWARDS.items():
        f = build_reward(name, spec.options(), ctx)
        assert f.__name__ == name
        out = f([GOOD, AFTER], answer=["2", "2"], completion_ids=[[0] * 20, [0] * 40], prompts=["p", "p"])
        assert len(out) == 2 and all(math.isfinite(v) for v in out)


def test_the_accuracy_reward_is_found_by_name_not_position():
    """A recipe that trains on accuracy (listed first) gets no second monitor, and the health monitor reads the
    listed one -- not rewards[-1], which is format here."""
    from mathrecipe.grpo import accuracy_reward, build_rewards
    from mathrecipe.recipe import load_recipe

    r = load_recipe(None, ["grpo.method=custom", "rewards={accuracy: {weight: 1}, format: {weight: 0.5}}"])
    funcs, weights = build_rewards(r)
    assert [f.__name__ for f in funcs] == ["accuracy", "format"] and weights == [1.0, 0.5]
    assert accuracy_reward(funcs) is funcs[0]


def test_the_report_plots_every_reward_series_it_finds():
    import matplotlib.pyplot as plt

    from mathrecipe.report import report_figure

    steps = [{"step": s, "mean_length": 50.0, "reward_truncation": 0.5, "reward_accuracy": 0.9, "reward_brand_new": 0.1}
             for s in (1, 2)]
    fig = report_figure({"eval": {}, "grpo": {"steps": 2, "health": {"steps": steps, "alarms": []}}})
    try:
        labels = {ln.get_label() for ax in fig.axes for ln in ax.get_lines()}
        assert {"truncation", "accuracy", "brand_new"} <= labels
    finally:
        plt.close(fig)
