import threading
import time

import pytest

from mathrecipe.grading import Grader, answer_end, extract_answer, grade_many, is_correct


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\fbox{7}", "7"),
        ("\\boxed 5.", "5"),
        ("\\boxed{3} and then cut off \\boxed{4", "3"),
        ("no answer here", None),
        ("\\boxed{}", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_answer_end_points_past_the_last_box():
    t = "x \\boxed{12} y"
    assert t[: answer_end(t)] == "x \\boxed{12}"
    assert answer_end("nothing") is None


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("\\boxed{0.5}", "\\frac{1}{2}"),
        ("\\boxed{\\frac12}", "1/2"),
        ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}"),
        ("\\boxed{x^2+2x+1}", "(x+1)^2"),
        ("the answer is \\boxed{204}", "204"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ],
)
def test_equivalent_forms_are_correct(completion, gold):
    assert is_correct(completion, gold)


def test_wrong_and_missing_answers():
    assert not is_correct("\\boxed{3}", "4")
    assert not is_correct("I think it is 4", "4")  # no boxed answer
    res = grade_many(["\\boxed{3}", "none", "\\boxed{4}"], ["4", "4", "4"])
    assert [r.correct for r in res] == [False, False, True]
    assert [r.extracted for r in res] == ["3", None, "4"]


def test_pathological_input_returns_within_its_bound():
    with Grader(workers=1, timeout=2.0) as g:
        t = time.monotonic()
        ok = g.verify_many(["1"], ["9^{9^{9^{9^{9}}}}"])
        assert ok == [False]
        assert time.monotonic() - t < 2.0 + 3.0  # bound + worker start-up


def test_overrunning_worker_is_killed_and_replaced():
    # A bound shorter than math-verify's own alarm: only the hard kill can end this answer.
    with Grader(workers=1, timeout=0.3) as g:
        g.verify_many(["1"], ["1.0"])  # start the worker outside the timed part
        t = time.monotonic()
        assert g.verify_many(["1"], ["(10^{10^{10}})!"]) == [False]
        assert time.monotonic() - t < 0.3 + 1.5
        assert g.timeouts == 1
        assert g.verify_many(["\\frac{1}{2}"], ["0.5"]) == [True]  # the replacement works


def test_usable_from_threads():
    out = {}

    def work(i):
        out[i] = is_correct(f"\\boxed{{{i}/2}}", f"{i / 2}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == {1: True, 2: True, 3: True, 4: True}


def test_results_are_cached():
    with Grader(workers=1) as g:
        assert g.verify_many(["\\frac{1}{3}"] * 3, ["1/3", "2/6", "1/3"]) == [True, True, True]
        assert len(g._cache) == 2  # duplicates verified once


def test_bad_timeout():
    with pytest.raises(ValueError, match="timeout"):
        Grader(timeout=0)
