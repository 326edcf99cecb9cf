import math
import statistics

import pytest

from mathrecipe.evaluate.metrics import (
    accuracy_at_budgets,
    correct_at_budget,
    majority_vote,
    mean_ci95,
    paired_bootstrap,
    pass_at_k,
    summarize,
)


def test_pass_at_k_hand_values():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))  # 0.5
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - math.comb(3, 3) / math.comb(5, 3))  # 0.9
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(64, 10, 1) == pytest.approx(10 / 64)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_vote():
    assert majority_vote(["1", "2", "2"], [True, False, False]) is False
    assert majority_vote(["1", "1", "2"], [True, True, False]) is True
    assert majority_vote(["1", "2"], [False, True]) is False  # tie: first seen wins
    assert majority_vote([None, None, "3"], [False, False, True]) is True  # no answer never wins
    assert majority_vote([None], [False]) is False
    same = lambda a, b: float(eval(a)) == float(eval(b))  # noqa: E731  (test-only equivalence)
    assert majority_vote(["1/2", "0.5", "3"], [True, True, False], same) is True


def test_ci_hand_value():
    m, lo, hi = mean_ci95([0.5, 0.75, 0.25, 0.5])
    half = 1.96 * math.sqrt(0.125 / 3) / 2  # sd = sqrt(sum of squared deviations / (m - 1))
    assert m == 0.5 and lo == pytest.approx(0.5 - half) and hi == pytest.approx(0.5 + half)
    assert mean_ci95([0.0, 1.0, 1.0, 0.0])[1:] == (0.0, 1.0)  # clamped to [0, 1]
    assert mean_ci95([0.7]) == (0.7, 0.7, 0.7)


def _samples():
    # problem a: one of two samples correct (answer closes at 50 tokens); problem b: both correct (300, 120)
    return [
        {"id": "a", "sample": 0, "correct": True, "boxes": [[50, True]], "tokens": 60, "extracted": "1",
         "finished": True},
        {"id": "a", "sample": 1, "correct": False, "boxes": [[380, False]], "tokens": 400, "extracted": "2",
         "finished": False},
        {"id": "b", "sample": 0, "correct": True, "boxes": [[300, True]], "tokens": 310, "extracted": "5",
         "finished": True},
        {"id": "b", "sample": 1, "correct": True, "boxes": [[120, True]], "tokens": 130, "extracted": "5",
         "finished": True},
    ]


def test_budget_curve_monotone_and_meets_accuracy():
    s = _samples()
    curve = accuracy_at_budgets(s, [10, 50, 100, 200, 300, 400])
    values = list(curve.values())
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert curve[10] == 0.0
    assert curve[50] == pytest.approx((0.5 + 0.0) / 2)
    assert curve[200] == pytest.approx((0.5 + 0.5) / 2)
    assert curve[400] == pytest.approx(summarize(s)["accuracy"])


def test_summarize():
    out = summarize(_samples(), ks=[1, 2, 8], budgets=[100, 400])
    assert out["n_problems"] == 2 and out["samples"] == 2
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["pass@k"] == {"1": pytest.approx(0.75), "2": pytest.approx(1.0)}  # k=8 > n is skipped
    assert out["maj@k"]["1"] == pytest.approx(1.0)
    assert out["mean_tokens"] == pytest.approx(225) and out["median_tokens"] == pytest.approx(220)
    assert out["mean_tokens_correct"] == pytest.approx(500 / 3)
    assert out["truncation_rate"] == pytest.approx(0.25)
    assert set(out["budgets"]) == {"100", "400"}


def test_budget_takes_the_last_box_complete_within_the_budget():
    # defect 3: right before </think> (40 tokens) and again at the end (90): correct from 40 on, not only from 90
    assert [correct_at_budget([(40, True), (90, True)], b) for b in (39, 40, 60, 90, 200)] == [
        False, True, True, True, True]
    # a right answer later replaced by a wrong one is wrong once the wrong one is complete
    assert [correct_at_budget([(40, True), (90, False)], b) for b in (30, 60, 90)] == [False, True, False]
    assert [correct_at_budget([(40, False), (90, True)], b) for b in (60, 90)] == [False, True]
    assert correct_at_budget([], 10**9) is False
    rows = [{"id": "a", "sample": 0, "correct": True, "boxes": [[40, True], [90, True]], "tokens": 95},
            {"id": "a", "sample": 1, "correct": False, "boxes": [[40, True], [90, False]], "tokens": 99}]
    assert accuracy_at_budgets(rows, [30, 60, 100]) == {30: 0.0, 60: 1.0, 100: 0.5}
    assert accuracy_at_budgets(rows, [100])[100] == summarize(rows)["accuracy"]


def test_budget_reads_rows_written_before_boxes():
    old = [{"id": "a", "correct": True, "answer_tokens": 50}, {"id": "a", "correct": False, "answer_tokens": None}]
    assert accuracy_at_budgets(old, [49, 50]) == {49: 0.0, 50: 0.5}


def test_paired_bootstrap():
    assert paired_bootstrap([0.5, 0.25, 1.0], [0.5, 0.25, 1.0]) == (0.0, 0.0, 0.0)
    assert paired_bootstrap([0.0, 0.0], [1.0, 1.0]) == (1.0, 1.0, 1.0)
    a, b = [0, 1, 0, 1, 0, 1, 1, 0], [1, 1, 0, 1, 1, 1, 1, 1]
    mean, lo, hi = paired_bootstrap(a, b, resamples=4000, seed=3)
    assert mean == pytest.approx(3 / 8) and 0 <= lo < mean < hi <= 1
    assert paired_bootstrap(a, b, resamples=4000, seed=3) == (mean, lo, hi)  # seeded
    # the interval is about the normal one: sd of the differences / sqrt(n) * 1.96
    sd = statistics.pstdev([y - x for x, y in zip(a, b)])
    assert hi - lo == pytest.approx(2 * 1.96 * sd / math.sqrt(8), rel=0.3)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])
