import json
import time

import pytest

from mathrecipe.cli import main
from mathrecipe.evaluate import harness


@pytest.fixture()
def bench_file(tmp_path, toy_splits):
    f = tmp_path / "toybench.jsonl"
    f.write_text("".join(json.dumps({"id": f"t{i}", **r}) + "\n" for i, r in enumerate(toy_splits.test[:6])))
    return f


def _eval(model, bench, out, *extra):
    return main(["-q", "eval", "--model", str(model), "--benchmarks", str(bench), "--out", str(out), "--n", "2",
                 "--max-tokens", "24", "--budgets", "8,16,24", "--temperature", "1.0", "--batch-size", "8", *extra])


def test_eval_writes_outputs_and_resumes(tiny_model_dir, bench_file, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    assert _eval(tiny_model_dir, bench_file, out) == 0
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    assert {"benchmark", "id", "sample", "completion", "tokens", "extracted", "correct"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())["benchmarks"]["toybench"]
    assert summary["n_problems"] == 6 and set(summary["budgets"]) == {"8", "16", "24"}
    assert set(summary["pass@k"]) == {"1", "2"}
    assert (out / "summary.md").exists() and (out / "budget.png").exists()

    # an interruption: 2 problems complete, a third with one sample, then a line cut off mid-write
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    generated = []
    real = harness.generate_hf

    def counting(model, tok, prompts, *a, **k):
        generated.extend(prompts)
        return real(model, tok, prompts, *a, **k)

    monkeypatch.setattr(harness, "generate_hf", counting)
    assert _eval(tiny_model_dir, bench_file, out) == 0
    assert len(generated) == 4  # only the 4 unfinished problems were generated again
    again = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["sample"]) for r in again) == sorted((r["id"], r["sample"]) for r in rows)
    assert again[:4] == rows[:4]  # finished work kept as it was

    generated.clear()
    assert _eval(tiny_model_dir, bench_file, out) == 0
    assert generated == []  # all done: nothing to generate


def test_eval_refuses_to_mix_settings(tiny_model_dir, bench_file, tmp_path, capsys):
    out = tmp_path / "eval"
    assert _eval(tiny_model_dir, bench_file, out, "--limit", "1") == 0
    assert _eval(tiny_model_dir, bench_file, out, "--limit", "1", "--seed", "5") == 2
    assert "seed differ" in capsys.readouterr().err


def test_eval_of_file_with_bad_row(tiny_model_dir, tmp_path, capsys):
    f = tmp_path / "b.jsonl"
    f.write_text('{"id": 1, "problem": "Compute 10 + 10.", "answer": ""}\n')
    assert _eval(tiny_model_dir, f, tmp_path / "o") == 2
    assert "b.jsonl, row 1: column 'answer' is empty" in capsys.readouterr().err


def test_grade_cli_keeps_fields(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        {"completion": "so \\boxed{\\frac{1}{2}}", "answer": "0.5", "model": "m1"},
        {"completion": "no box", "answer": "1", "model": "m2"},
    ]))
    assert main(["grade", "--input", str(src), "--output", str(tmp_path / "out.jsonl")]) == 0
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == [
        {"completion": "so \\boxed{\\frac{1}{2}}", "answer": "0.5", "model": "m1", "extracted": "\\frac{1}{2}",
         "correct": True},
        {"completion": "no box", "answer": "1", "model": "m2", "extracted": None, "correct": False},
    ]
    assert "accuracy 0.5000 (1/2)" in capsys.readouterr().out
    src.write_text('{"completion": "x"}\n')
    assert main(["grade", "--input", str(src)]) == 2
    assert "line 1: missing column 'answer'" in capsys.readouterr().err


@pytest.mark.slow
def test_grade_cli_10k_rows_with_a_pathological_row(tmp_path, shared_data, capsys):
    golds = [json.loads(x)["answer"] for x in (shared_data / "benchmarks" / "gsm8k_test.jsonl").read_text().splitlines()]
    rows = []
    forms = ["\\boxed{%s}", "\\boxed{%s.0}", "the answer is \\boxed{%s}", "\\boxed{%s+1}", "\\boxed{2*%s}",
             "\\boxed{\\frac{%s}{1}}", "no answer %s", "\\boxed{%s} then \\boxed{0}"]
    for i in range(10_000):
        a = golds[i % len(golds)]
        rows.append({"completion": forms[(i // len(golds)) % len(forms)] % a, "answer": a})
    rows[1234] = {"completion": "\\boxed{(10^{10^{10}})!}", "answer": "1"}
    src = tmp_path / "big.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = time.monotonic()
    assert main(["grade", "--input", str(src), "--timeout", "2"]) == 0
    took = time.monotonic() - t
    out = [json.loads(x) for x in (tmp_path / "big.graded.jsonl").read_text().splitlines()]
    assert len(out) == 10_000 and out[1234]["correct"] is False
    assert out[0]["correct"] is True
    assert "graded 10000 rows" in capsys.readouterr().out
    assert took < 600
