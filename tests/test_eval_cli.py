import argparse
import json
import re
import time

import pytest

from mathrecipe.cli import build_parser, main
from mathrecipe.evaluate import generation as gen_mod
from mathrecipe.evaluate.generation import Completion, HFGenerator


@pytest.fixture()
def bench_file(tmp_path, toy_splits):
    f = tmp_path / "toybench.jsonl"
    f.write_text("".join(json.dumps({"id": f"t{i}", **r}) + "\n" for i, r in enumerate(toy_splits.test[:6])))
    return f


def _eval(model, bench, out, *extra):
    return main(["-q", "eval", "--model", str(model), "--benchmarks", str(bench), "--out", str(out), "--samples",
                 "2", "--max-new-tokens", "24", "--temperature", "1.0", "--batch-size", "8", *extra])


def _rows(out):
    return [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]


class Counting:
    """Wraps generation.make_generator: records every prompt generated."""

    def __init__(self, monkeypatch, script=None):
        self.prompts = []
        real = gen_mod.make_generator
        counter = self

        def make(backend, model, tokenizer, **kw):
            gen = Scripted(tokenizer, script) if script else real(backend, model, tokenizer, **kw)
            inner = gen.generate

            def generate(prompts, settings, on_progress=None):
                counter.prompts.extend(prompts)
                return inner(prompts, settings, on_progress)

            gen.generate = generate
            return gen

        monkeypatch.setattr(gen_mod, "make_generator", make)


class Scripted(HFGenerator):
    """A generator that writes script(problem text) for every sample: correctness chosen by the test."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script, self.batch_size = tokenizer, script, 4

    def batch_size_for(self, prompts, settings):
        return 4

    def generate(self, prompts, settings, on_progress=None):
        out = []
        for p in prompts:
            text = self.script(self.tokenizer.decode(p))
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            out.append([Completion(text, ids, True)] * settings.samples)
        return out


def test_eval_writes_outputs_and_resumes(tiny_model_dir, bench_file, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    assert _eval(tiny_model_dir, bench_file, out, "--budgets", "8,16,24") == 0
    rows = _rows(out)
    assert len(rows) == 12
    assert {"benchmark", "id", "sample", "completion", "tokens", "extracted", "correct", "boxes"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())["benchmarks"]["toybench"]
    assert summary["n_problems"] == 6 and summary["samples"] == 2 and set(summary["budgets"]) == {"8", "16", "24"}
    assert set(summary["pass@k"]) == {"1", "2"}
    assert (out / "summary.md").exists() and (out / "budget.png").exists()

    # defect 1: killed while writing the FIRST sample of the third problem (nothing else partial)
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])
    counted = Counting(monkeypatch)
    assert _eval(tiny_model_dir, bench_file, out) == 0
    assert len(counted.prompts) == 4  # only the 4 unfinished problems were generated again
    again = _rows(out)
    keys = [(r["id"], r["sample"]) for r in again]
    assert sorted(keys) == sorted((r["id"], r["sample"]) for r in rows) and len(set(keys)) == 12
    assert again[:4] == rows[:4]  # finished work kept as it was
    assert json.loads((out / "summary.json").read_text())["benchmarks"]["toybench"]["n_problems"] == 6

    counted.prompts.clear()
    assert _eval(tiny_model_dir, bench_file, out) == 0
    assert counted.prompts == [] and len(_rows(out)) == 12  # all done: nothing to generate, nothing lost


def _toy_answer(prompt):
    """The answer of a toy problem ("Compute 12 + 30 - 5.") read from its prompt."""
    (expr,) = re.findall(r"Compute ([0-9+\- ]+)\.", prompt)
    parts = expr.split()
    total = int(parts[0])
    for op, x in zip(parts[1::2], parts[2::2]):
        total += int(x) if op == "+" else -int(x)
    return total


def right_for(problems):
    """A script answering the given problems right and every other one wrong."""
    def script(prompt):
        a = _toy_answer(prompt)
        ok = any(p in prompt for p in problems)
        return f"<think>\nok\n</think>\n\\boxed{{{a if ok else a + 1}}}"
    return script


@pytest.fixture()
def ten(tmp_path, toy_splits):
    f = tmp_path / "ten.jsonl"
    f.write_text("".join(json.dumps({"id": i, **r}) + "\n" for i, r in enumerate(toy_splits.test[:10])))
    return f


def test_limit_selects_exactly_the_problems_it_names(tiny_model_dir, ten, toy_splits, tmp_path, monkeypatch):
    # defect 2: a rerun with --limit 2 into a 10-problem run reported 10 problems at 0.2; right: 2 at 1.0
    counted = Counting(monkeypatch, right_for([r["problem"] for r in toy_splits.test[:2]]))
    out = tmp_path / "o"
    assert _eval(tiny_model_dir, ten, out) == 0
    s = json.loads((out / "summary.json").read_text())["benchmarks"]["ten"]
    assert (s["n_problems"], s["accuracy"]) == (10, pytest.approx(0.2))
    n = len(counted.prompts)
    assert _eval(tiny_model_dir, ten, out, "--limit", "2") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["benchmarks"]["ten"]["n_problems"], summary["benchmarks"]["ten"]["accuracy"]) == (2, 1.0)
    assert summary["ids"]["ten"] == [0, 1] and len(counted.prompts) == n  # nothing generated again
    assert len(_rows(out)) == 20  # the other problems' rows are kept for later runs
    assert _eval(tiny_model_dir, ten, out) == 0
    assert json.loads((out / "summary.json").read_text())["benchmarks"]["ten"]["n_problems"] == 10


def test_changed_data_or_settings_are_refused(tiny_model_dir, ten, tmp_path, monkeypatch, capsys):
    Counting(monkeypatch, right_for([]))
    out = tmp_path / "o"
    assert _eval(tiny_model_dir, ten, out, "--limit", "3") == 0
    capsys.readouterr()
    lines = ten.read_text().splitlines()
    ten.write_text("\n".join(lines[:-1] + [lines[-1].replace('"answer": "', '"answer": "1')]) + "\n")
    assert _eval(tiny_model_dir, ten, out, "--limit", "3") == 2  # the 10th answer changed: another data set
    err = capsys.readouterr().err
    assert "ten data differ" in err and len(err.strip().splitlines()) == 1
    ten.write_text("\n".join(lines) + "\n")
    for extra, what in [(["--seed", "5"], "seed"), (["--samples", "3"], "ten samples"),
                        (["--max-new-tokens", "30"], "max_new_tokens"), (["--system-prompt", ""], "system_prompt")]:
        assert _eval(tiny_model_dir, ten, out, "--limit", "3", *extra) == 2
        assert f"({what} differ)" in capsys.readouterr().err
    assert _eval(tiny_model_dir, ten, out, "--limit", "3") == 0  # the same settings resume


def test_changed_backend_is_refused(tiny_model_dir, ten, tmp_path, monkeypatch, capsys):
    from test_generation import FakeVLLM
    from transformers import AutoTokenizer

    Counting(monkeypatch, right_for([]))
    out = tmp_path / "o"
    assert _eval(tiny_model_dir, ten, out, "--limit", "2") == 0
    FakeVLLM(AutoTokenizer.from_pretrained(tiny_model_dir)).install(monkeypatch)
    assert _eval(tiny_model_dir, ten, out, "--limit", "2", "--backend", "vllm") == 2
    assert "(backend differ)" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--samples", "0"], "--samples must be >= 1, got 0"),
    (["--samples", "-1"], "--samples must be >= 1, got -1"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--limit", "-195"], "--limit must be >= 1"),
    (["--budgets=-5"], "--budgets must be integers >= 1, got -5"),
    (["--k", "0,2"], "--k must be integers >= 1, got 0"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1 or 'auto'"),
    (["--batch-size", "big"], "--batch-size must be an integer >= 1 or 'auto'"),
    (["--kv-cache-gib", "0"], "--kv-cache-gib must be > 0"),
    (["--backend", "tgi"], "--backend must be one of hf, vllm"),
    (["--data-dir", "/nonexistent/dir"], "--data-dir /nonexistent/dir: no such folder"),
])
def test_bad_arguments_fail_first_in_one_line(args, message, tiny_model_dir, bench_file, tmp_path, monkeypatch,
                                              capsys):
    def never(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(gen_mod, "make_generator", never)
    out = tmp_path / "o"
    assert _eval(tiny_model_dir, bench_file, out, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mathrecipe: error: {message}") and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing written: the next correct run into this --out is not refused


def test_bad_model_paths_fail_first(bench_file, tmp_path, capsys):
    assert _eval(tmp_path / "nope" / "model", bench_file, tmp_path / "o") == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _eval(tmp_path / "empty", bench_file, tmp_path / "o") == 2
    assert "missing config.json, weights" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    (tmp_path / "empty" / "config.json").write_text("{}")  # a half-written save: config, no weights
    assert _eval(tmp_path / "empty" / "config.json", bench_file, tmp_path / "o") == 2  # a file: not a folder
    assert "a file, not a model folder" in capsys.readouterr().err
    assert _eval(tmp_path / "empty", bench_file, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mathrecipe: error: --model {tmp_path / 'empty'} is incomplete")
    assert "missing weights" in err and len(err.strip().splitlines()) == 1


def test_a_failed_run_does_not_bind_the_folder(tiny_model_dir, bench_file, tmp_path, monkeypatch, capsys):
    from mathrecipe.errors import MathRecipeError

    def broken(*a, **k):
        raise MathRecipeError("cannot load the model")

    monkeypatch.setattr(gen_mod, "make_generator", broken)
    out = tmp_path / "o"
    assert _eval(tiny_model_dir, bench_file, out, "--seed", "1") == 2
    monkeypatch.undo()
    Counting(monkeypatch, right_for([]))
    assert _eval(tiny_model_dir, bench_file, out, "--seed", "2") == 0  # no rows were made: other settings are fine


def test_eval_of_file_with_bad_row(tiny_model_dir, tmp_path, capsys):
    f = tmp_path / "b.jsonl"
    f.write_text('{"id": 1, "problem": "Compute 10 + 10.", "answer": ""}\n')
    assert _eval(tiny_model_dir, f, tmp_path / "o") == 2
    assert "b.jsonl, row 1: column 'answer' is empty" in capsys.readouterr().err


def _resolve(*argv):
    from mathrecipe.evaluate.cli import resolve_eval

    args = build_parser().parse_args(["eval", "--model", "m", "--benchmarks", "aime24,math500,x.jsonl", "--out", "o",
                                      *argv])
    return resolve_eval(args)


def test_defaults_come_from_the_recipe_then_preset_then_flags(tmp_path):
    from mathrecipe.recipe import EvalConfig

    d = EvalConfig()
    kw = _resolve()
    s = kw["settings"]
    assert (s.samples, s.temperature, s.top_p, s.max_new_tokens) == (d.samples, d.temperature, d.top_p,
                                                                    d.max_new_tokens)
    assert kw["batch_size"] == d.batch_size and kw["backend"] == d.backend and kw["samples_by_benchmark"] == {}

    kw = _resolve("--preset", "r1")
    s = kw["settings"]
    assert (s.temperature, s.top_p, s.max_new_tokens, s.samples) == (0.6, 0.95, 32768, 4)
    assert kw["samples_by_benchmark"] == {"aime24": 64, "aime25": 64, "amc23": 64, "math500": 4}
    kw = _resolve("--preset", "r1", "--samples", "8", "--top-p", "0.9")
    assert kw["samples_by_benchmark"] == {} and kw["settings"].samples == 8 and kw["settings"].top_p == 0.9

    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 7\neval: {samples: 3, temperature: 0.5, batch_size: auto, kv_cache_gib: 2.5}\n"
                      "data: {system_prompt: Think.}\n")
    kw = _resolve("--recipe", str(recipe), "--temperature", "0.7")
    s = kw["settings"]
    assert (s.samples, s.temperature, s.seed, kw["batch_size"], kw["kv_cache_gib"], kw["system_prompt"]) == (
        3, 0.7, 7, "auto", 2.5, "Think.")
    recipe.write_text("eval: {top_p: 1.5}\n")
    from mathrecipe.errors import MathRecipeError

    with pytest.raises(MathRecipeError, match=r"eval.top_p must be in \(0, 1\]"):
        _resolve("--recipe", str(recipe))


def test_preset_r1_runs_64_samples_on_aime(tiny_model_dir, shared_data, tmp_path, monkeypatch):
    counted = Counting(monkeypatch, lambda prompt: "\\boxed{1}")
    out = tmp_path / "o"
    assert main(["-q", "eval", "--model", str(tiny_model_dir), "--benchmarks", "aime24,math500", "--data-dir",
                 str(shared_data / "benchmarks"), "--out", str(out), "--preset", "r1", "--limit", "1"]) == 0
    cfg = json.loads((out / "eval_config.json").read_text())
    assert {k: v["samples"] for k, v in cfg["benchmarks"].items()} == {"aime24": 64, "math500": 4}
    assert cfg["sampling"]["max_new_tokens"] == 32768 and cfg["sampling"]["temperature"] == 0.6
    assert len(_rows(out)) == 68 and len(counted.prompts) == 2


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


@pytest.mark.parametrize("args, message", [
    (["--timeout", "0"], "--timeout must be > 0 seconds, got 0"),
    (["--workers", "0"], "--workers must be >= 1, got 0"),
])
def test_grade_bad_arguments(args, message, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"completion": "\\\\boxed{1}", "answer": "1"}\n')
    assert main(["grade", "--input", str(src), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mathrecipe: error: {message}") and len(err.strip().splitlines()) == 1


def test_grade_input_folder_says_folder(tmp_path, capsys):
    assert main(["grade", "--input", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder; give a JSONL file" in err and "no such file" not in err
    assert main(["grade", "--input", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_help_texts():
    for cmd in (["eval"], ["grade"], ["compare"]):
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0
    assert isinstance(build_parser(), argparse.ArgumentParser)


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
