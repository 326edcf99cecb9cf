import json

import pytest

from mathrecipe.data.benchmarks import REGISTRY, _gsm8k_answer, load_benchmark
from mathrecipe.data.io import DataError
from mathrecipe.grading import Grader, extract_answer


def test_registry_reads_every_shared_benchmark(shared_data):
    sizes = {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "gsm8k": 1319}
    for name, n in sizes.items():
        got, problems = load_benchmark(name, shared_data / "benchmarks")
        assert got == name and len(problems) == n
        assert all(p["problem"] and p["answer"] for p in problems)
    assert set(sizes) == set(REGISTRY)


def test_math500_gold_solutions_grade_correct(shared_data):
    rows = [json.loads(x) for x in (shared_data / "benchmarks" / "math500_test.jsonl").read_text().splitlines()]
    with Grader(workers=2) as g:
        public = g.grade([r["solution"] for r in rows], [r["answer"] for r in rows])
        assert sum(r.correct for r in public) >= 497
        # and through math-verify itself, not only the identical-text shortcut
        verified = g._run([(r["answer"].strip(), extract_answer(r["solution"])) for r in rows])
        assert sum(verified) >= 497


@pytest.mark.parametrize("name", ["aime24", "aime25", "amc23", "gsm8k"])
def test_boxed_gold_answers_in_a_sentence_grade_correct(shared_data, name):
    _, problems = load_benchmark(name, shared_data / "benchmarks")
    with Grader(workers=2) as g:
        res = g.grade([f"Putting it together, the answer is \\boxed{{{p['answer']}}}." for p in problems],
                      [p["answer"] for p in problems])
    assert sum(r.correct for r in res) == len(problems)


def test_missing_column_and_empty_answer_name_file_row_column(tmp_path):
    f = tmp_path / "bench.jsonl"
    f.write_text('{"id": 1, "problem": "p1", "answer": "1"}\n{"id": 2, "problem": "p2"}\n')
    with pytest.raises(DataError, match=r"bench.jsonl, row 2: missing column 'answer'"):
        load_benchmark(str(f))
    f.write_text('{"id": 1, "problem": "p1", "answer": "1"}\n{"id": 2, "problem": "p2", "answer": "  "}\n')
    with pytest.raises(DataError, match=r"bench.jsonl, row 2: column 'answer' is empty"):
        load_benchmark(str(f))
    f.write_text('{"id": 1, "question": "p1", "gold": 3.0}\n')
    name, probs = load_benchmark(str(f), problem_column="question", answer_column="gold")
    assert name == "bench" and probs == [{"id": 1, "problem": "p1", "answer": "3"}]
    with pytest.raises(DataError, match="unknown benchmark 'nope'"):
        load_benchmark("nope")


def test_gsm8k_hub_answer_transform():
    assert _gsm8k_answer("She pays 2 * 9 = <<2*9=18>>18 dollars.\n#### 1,018") == "1018"
