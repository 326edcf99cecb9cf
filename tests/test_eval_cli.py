import argparse
import json
import re
import time

import pytest
from helpers import TINY_MODEL

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
                 "2", "--max-new-tokens", "24", "--temperature", "1.0", "--generate-batch-size", "8", *extra])


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
    (["--generate-batch-size", "0"], "--generate-batch-size must be an integer >= 1 or 'auto'"),
    (["--generate-batch-size", "big"], "--generate-batch-size must be an integer >= 1 or 'auto'"),
    (["--kv-cache-gib", "0"], "--kv-cache-gib must be > 0"),
    (["--backend", "tgi"], "--backend must be one of hf, vllm"),
    (["--batch-size", "8"], "--batch-size is now --generate-batch-size (one name per concept); use "
                            "--generate-batch-size 8"),  # the flag's old spelling
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
    assert kw["generate_batch_size"] == d.generate_batch_size and kw["backend"] == d.backend and kw["samples_by_benchmark"] == {}

    kw = _resolve("--preset", "r1")
    s = kw["settings"]
    assert (s.temperature, s.top_p, s.max_new_tokens, s.samples) == (0.6, 0.95, 32768, 4)
    assert kw["samples_by_benchmark"] == {"aime24": 64, "aime25": 64, "amc23": 64, "math500": 4}
    kw = _resolve("--preset", "r1", "--samples", "8", "--top-p", "0.9")
    assert kw["samples_by_benchmark"] == {} and kw["settings"].samples == 8 and kw["settings"].top_p == 0.9

    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 7\neval: {samples: 3, temperature: 0.5, generate_batch_size: auto, kv_cache_gib: 2.5}\n"
                      "data: {system_prompt: Think.}\n")
    kw = _resolve("--recipe", str(recipe), "--temperature", "0.7")
    s = kw["settings"]
    assert (s.samples, s.temperature, s.seed, kw["generate_batch_size"], kw["kv_cache_gib"], kw["system_prompt"]) == (
        3, 0.7, 7, "auto", 2.5, "Think.")
    recipe.write_text("eval: {top_p: 1.5}\n")
    from mathrecipe.errors import MathRecipeError

    with pytest.raises(MathRecipeError, match=r"eval.top_p must be in \(0, 1\]"):
        _resolve("--recipe", str(recipe))


def test_preset_r1_runs_64_samples_on_aime(tiny_model_dir, shared_data, tmp_path, monkeypatch):
    counted = Counting(monkeypatch, lambda prompt: "\\boxed{1}")
    out = tmp_path / "o"
    assert main(["-q", "eval", "--model", str(tiny_model_dir), "--benchmarks", "aime24,math500", "--data-dir",
                 str(shared_data / "benchmarks"), "--out", str(out), "--preset", "r1", "--limit", "1",
                 "--max-new-tokens", "512"]) == 0  # the tiny model has 1,024 positions: 32,768 would not fit
    cfg = json.loads((out / "eval_config.json").read_text())
    assert {k: v["samples"] for k, v in cfg["benchmarks"].items()} == {"aime24": 64, "math500": 4}
    assert cfg["sampling"]["max_new_tokens"] == 512 and cfg["sampling"]["temperature"] == 0.6
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
    assert took < 600  # a hang guard only (the pathological row is bounded by --timeout 2), not a speed bound


# ------------------------------------------------------------------------------------- issue 22, items 2, 3, 5, 7, 8


def _one_line(capsys, *words):
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("mathrecipe: error: "), err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_another_model_copied_to_the_same_path_is_refused(tiny_model_dir, ten, tmp_path, toy_splits, capsys):
    # 22.2: --limit 5 with model A at m/, then model B copied to m/ and --limit 10 into the same --out: mixing the two
    # models' rows into one summary over 20 rows was accepted
    import shutil

    from mathrecipe.toy import build_toy_model_folder

    m, other = tmp_path / "m", tmp_path / "other"
    shutil.copytree(tiny_model_dir, m)
    build_toy_model_folder(other, toy_splits, seed=7, **TINY_MODEL)
    out = tmp_path / "o"
    assert _eval(m, ten, out, "--limit", "5") == 0
    before = (out / "samples.jsonl").read_text()
    assert _eval(m, ten, out, "--limit", "5") == 0  # the same files: resumes (nothing to do)
    shutil.rmtree(m)
    shutil.copytree(other, m)  # another model, same path
    capsys.readouterr()
    assert _eval(m, ten, out, "--limit", "10") == 2
    _one_line(capsys, str(out), "another model", "model.safetensors rewritten", "new --out")
    assert (out / "samples.jsonl").read_text() == before  # nothing added, nothing lost


def test_model_fingerprint_reads_no_weights_and_sees_rewrites(tiny_model_dir, tmp_path):
    import os
    import shutil

    from mathrecipe.evaluate.identity import fingerprint_changes, model_fingerprint

    m = tmp_path / "m"
    shutil.copytree(tiny_model_dir, m)
    (m / "optimizer.pt").write_bytes(b"x")  # training state does not decide what the model generates
    first = model_fingerprint(m)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(first) and "optimizer.pt" not in first
    (m / "optimizer.pt").write_bytes(b"yy")
    assert fingerprint_changes(first, model_fingerprint(m)) == []
    st = (m / "model.safetensors").stat()
    os.utime(m / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same size, rewritten
    assert fingerprint_changes(first, model_fingerprint(m)) == ["model.safetensors rewritten"]
    assert model_fingerprint("no-such-org/no-such-model") is None  # a hub id not in the cache: unknown


def _big_benchmark(path, toy_splits, big_row):
    rows = [{"id": i, **r} for i, r in enumerate(toy_splits.test[:3])]
    rows.insert(1, big_row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_5mb_problem_is_refused_in_seconds_under_2gb(tiny_model_dir, tmp_path, toy_splits):
    # 22.3: a 5 MB problem ran until it was killed at 12 GB (the toy model has 1,024 positions)
    import subprocess
    import sys

    bench = _big_benchmark(tmp_path / "big.jsonl", toy_splits,
                           {"id": "huge", "problem": "Compute 12 + 30 - 5. " * 250_000, "answer": "37"})
    assert bench.stat().st_size > 5_000_000
    out = tmp_path / "o"
    # the command runs as a child of a small wrapper, whose RUSAGE_CHILDREN peak is then that command's alone
    wrapper = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
               "sys.stderr.write(done.stderr); print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN)"
               ".ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "mathrecipe.cli", "-q", "eval",
                           "--model", str(tiny_model_dir), "--benchmarks", str(bench), "--out", str(out),
                           "--samples", "1", "--max-new-tokens", "16"], capture_output=True, text=True, timeout=300)
    rc, peak_kib = map(int, done.stdout.split())
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "benchmark big: 1 prompt(s) + max_new_tokens=16 exceed the model's context of 1024 tokens" in lines[0]
    assert "row 2 (id huge)" in lines[0]
    assert peak_kib < 2 * 1024 * 1024, peak_kib
    assert not out.exists()  # refused before anything was written: no stray eval_config.json


def test_a_prompt_that_leaves_too_few_positions_is_refused_with_its_length(tiny_model_dir, tmp_path, toy_splits,
                                                                           monkeypatch, capsys):
    # 22.3: a 2,104-token prompt on a 1,024-position model was evaluated and graded without a word
    from transformers import AutoTokenizer

    from mathrecipe.prompts import prompt_ids

    problem = "Compute 12 + 30 - 5. " * 150
    n = len(prompt_ids(AutoTokenizer.from_pretrained(tiny_model_dir), problem))
    assert 1024 - 24 < n < 4 * 1024  # fits the context alone, not with the 24 new tokens
    bench = _big_benchmark(tmp_path / "long.jsonl", toy_splits, {"id": "long", "problem": problem, "answer": "37"})
    counted = Counting(monkeypatch, right_for([]))
    assert _eval(tiny_model_dir, bench, tmp_path / "o") == 2
    _one_line(capsys, f"row 2 (id long) ({n} prompt tokens)", "max_new_tokens=24", "context of 1024 tokens")
    assert counted.prompts == [] and not (tmp_path / "o").exists()


def test_in_run_evaluation_checks_prompt_length_before_generating(tiny_model_dir, toy_splits, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathrecipe.errors import MathRecipeError
    from mathrecipe.evaluate.inrun import evaluate_for_recipe
    from mathrecipe.recipe import load_recipe

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    monkeypatch.setattr(model, "generate", lambda *a, **k: pytest.fail("generated from an over-long prompt"))
    problems = [{"id": "a", **toy_splits.test[0]}, {"id": "b", "problem": "Compute 1 + 1. " * 2000, "answer": "2"}]
    with pytest.raises(MathRecipeError, match=r"evaluation \(epoch 1\): 1 prompt\(s\) \+ max_new_tokens=16 exceed "
                       r"the model's context of 1024 tokens \(first: row 2 \(id b\)"):
        evaluate_for_recipe(load_recipe(None, ["eval.max_new_tokens=16"]), model, tok, problems, "epoch 1")


def test_progress_moves_per_finished_sequence_not_per_generate_call(tiny_model_dir):
    # 22.8: with the default batch every sequence of a chunk is in one generate call, and the bar sat at 0/40 for
    # minutes, then jumped. A model that ends its samples at different steps must move the bar as each one ends.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathrecipe.evaluate.generation import SamplingSettings
    from mathrecipe.prompts import batch_prompt_ids as prompt_ids

    tok, model = AutoTokenizer.from_pretrained(tiny_model_dir), AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    bias = torch.zeros(model.config.vocab_size)
    bias[tok.eos_token_id] = 4.0  # end-of-sequence likely enough that samples end at different steps
    model.lm_head.register_forward_hook(lambda module, inputs, output: output + bias)
    calls = []
    gen = HFGenerator(model, tok, batch_size=8)
    out = gen.generate(prompt_ids(tok, [toy["problem"] for toy in ({"problem": "Compute 12 + 30 - 5."},) * 2]),
                       SamplingSettings(samples=4, temperature=1.0, max_new_tokens=40, seed=0), calls.append)
    lengths = sorted({c.n_tokens for cs in out for c in cs})
    assert len(lengths) > 1  # the samples did end at different steps
    assert sum(calls) == 8 and len(calls) > 1 and calls[0] < 8, calls  # one generate call, several updates


def test_k_above_the_samples_is_refused_or_said(tiny_model_dir, ten, tmp_path, monkeypatch, capsys, caplog):
    # 22.7: --k 8 --samples 2 printed "-" for maj@8/pass@8 without a word
    counted = Counting(monkeypatch, right_for([]))
    assert _eval(tiny_model_dir, ten, tmp_path / "o", "--k", "1,8") == 2
    _one_line(capsys, "--k 8 exceeds the samples per problem (2)", "--samples 8")
    assert counted.prompts == [] and not (tmp_path / "o").exists()
    # above some benchmarks' samples only (a preset's 64 on AIME, 4 elsewhere): computed where it can be, said once
    from mathrecipe.evaluate.run import check_ks

    with caplog.at_level("WARNING"):
        assert check_ks([1, 8], {"aime24": 64, "math500": 4}) == [1, 8]
    assert [r.getMessage() for r in caplog.records] == [
        "--k 8: above the samples per problem of math500 (4); those cells are shown as '-'"]


def test_out_naming_a_file_and_an_empty_benchmark_are_one_line(tiny_model_dir, ten, tmp_path, monkeypatch, capsys):
    def never(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(gen_mod, "make_generator", never)
    f = tmp_path / "afile"
    f.write_text("keep")
    assert _eval(tiny_model_dir, ten, f) == 2
    _one_line(capsys, f"--out {f} is a file; give a folder")
    assert f.read_text() == "keep"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert _eval(tiny_model_dir, empty, tmp_path / "o") == 2
    _one_line(capsys, "empty.jsonl", "no problems")
    assert not (tmp_path / "o").exists()  # checked before loading the model: no stray eval_config.json


def test_a_benchmark_that_is_not_utf8_is_one_line(tiny_model_dir, tmp_path, capsys):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(b'{"id": 1, "problem": "Compute 10 + 10.", "answer": "20"}\n'
                  + '{"id": 2, "problem": "Calculez 10 + 10 façon", "answer": "20"}\n'.encode("latin-1"))
    assert _eval(tiny_model_dir, f, tmp_path / "o") == 2
    _one_line(capsys, "latin1.jsonl, line 2: not UTF-8", "byte 0xe7", "save the file as UTF-8")
    assert not (tmp_path / "o").exists()


def test_pickled_weights_torch_refuses_are_one_line(tiny_model_dir, tmp_path, capsys):
    # 22.5: refused safely (weights_only), but as a traceback
    import os
    import shutil

    import torch
    from safetensors.torch import load_file

    m = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, m)
    state = load_file(m / "model.safetensors")
    (m / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save({**state, "payload": Payload()}, m / "pytorch_model.bin")
    assert _eval(m, tmp_path / "none.jsonl", tmp_path / "o") == 2  # a missing benchmark fails first
    capsys.readouterr()
    ok = tmp_path / "b.jsonl"
    ok.write_text('{"id": 1, "problem": "Compute 10 + 10.", "answer": "20"}\n')
    assert _eval(m, ok, tmp_path / "o") == 2
    _one_line(capsys, f"--model {m}", "pickled weights", "safetensors")
    assert not (tmp_path / "ran").exists()


def _disk_full(monkeypatch):
    """Every flush to disk fails as on a full disk (fsync reports ENOSPC; the write before it would, too)."""
    import errno
    import os

    import mathrecipe.evaluate.samples as samples_mod
    import mathrecipe.files as files_mod

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files_mod.os, "fsync", full)
    monkeypatch.setattr(samples_mod.os, "fsync", full)


def test_disk_full_in_grade_and_eval_is_one_line_naming_the_file(tiny_model_dir, ten, tmp_path, monkeypatch,
                                                                  capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"completion": "\\\\boxed{1}", "answer": "1"}\n')
    out = tmp_path / "graded.jsonl"
    _disk_full(monkeypatch)
    assert main(["grade", "--input", str(src), "--output", str(out)]) == 2
    _one_line(capsys, f"{out}: no space left on device", "free some space")
    assert not out.exists() and not list(tmp_path.glob(".graded.jsonl*"))  # no temporary file left
    Counting(monkeypatch, right_for([]))
    assert _eval(tiny_model_dir, ten, tmp_path / "o", "--limit", "2") == 2
    _one_line(capsys, f"{tmp_path / 'o' / 'eval_config.json'}: no space left on device")


def test_grade_with_nothing_to_grade_fails(tmp_path, capsys):
    # 22.5: "0/0" and exit 0 read as a result
    src = tmp_path / "empty.jsonl"
    src.write_text("\n \n")
    assert main(["grade", "--input", str(src)]) == 2
    _one_line(capsys, f"--input {src}: no rows to grade")
    assert not (tmp_path / "empty.graded.jsonl").exists()
    src.write_bytes(b'{"completion": "\\\\boxed{1}", "answer": "1\xff"}\n')
    assert main(["grade", "--input", str(src)]) == 2
    _one_line(capsys, "empty.jsonl, line 1: not UTF-8", "byte 0xff")


def test_budget_png_is_written_without_budgets(tiny_model_dir, ten, tmp_path, monkeypatch):
    # 22.8: the README lists budget.png among eval's outputs; it was written only with --budgets
    Counting(monkeypatch, right_for([]))
    assert _eval(tiny_model_dir, ten, tmp_path / "o", "--limit", "2") == 0
    assert (tmp_path / "o" / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "budgets" not in json.loads((tmp_path / "o" / "summary.json").read_text())["benchmarks"]["ten"]


def test_the_toy_length_on_a_real_model_is_warned_about(tmp_path, monkeypatch, toy_splits, tiny_model_dir, caplog):
    # 18.3: without a recipe eval used the toy's 160 new tokens, which cut real answers, without a word
    from conftest import make_template_model_dir

    real = make_template_model_dir(tmp_path / "qwen", "qwen2_5")
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": 1, "problem": "Compute 10 + 10.", "answer": "20"}) + "\n")
    Counting(monkeypatch, lambda prompt: "\\boxed{20}")

    def run(model, out, *extra):
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert main(["-q", "eval", "--model", str(model), "--benchmarks", str(bench), "--out", str(tmp_path / out),
                         "--samples", "1", *extra]) == 0
        return [r.getMessage() for r in caplog.records if "toy recipe" in r.getMessage()]

    (warning,) = run(real, "a")
    assert "built-in toy recipe's 160" in warning and "--preset r1" in warning and "--max-new-tokens" in warning
    assert run(real, "b", "--max-new-tokens", "200") == []  # chosen: nothing to say
    assert run(tiny_model_dir, "c") == []  # the toy's own model: the toy's length fits


def test_sampling_flags_have_help(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, words in (("--top-p TOP_P", "nucleus sampling"), ("--min-p MIN_P", "drop tokens less likely"),
                        ("--seed SEED", "sampling seed")):
        assert f"{flag} {words}" in text, flag
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    assert "%%" not in text and "95 % CI" in " ".join(text.split())


def test_a_sampling_key_is_declared_once(capsys):
    """Issue 19.3: eval, solve and the in-run evaluation resolve sampling in one place. Every EvalConfig field is a
    flag of both commands, its field doc the help; every SamplingSettings field (seed aside) is filled from the
    EvalConfig field of its name. A new key (say repetition_penalty) is one field in each, nothing else."""
    import dataclasses

    from mathrecipe.evaluate.generation import SamplingSettings
    from mathrecipe.evaluate.sampling import flag, recipe_settings
    from mathrecipe.recipe import EvalConfig, load_recipe

    fields = dataclasses.fields(EvalConfig)
    assert {f.name for f in dataclasses.fields(SamplingSettings)} - {"seed"} <= {f.name for f in fields}
    for cmd in ("eval", "solve"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for f in fields:
            if f.name not in ("samples", "stop_at_think") or cmd == "eval":  # solve words these two its own way
                assert f"{flag(f.name)} " in text and " ".join(f.metadata["help"].split())[:40] in text, (cmd, f.name)
    s = recipe_settings(load_recipe(None, ["eval.top_p=0.5", "eval.min_p=0.1", "eval.stop_at_think=true", "seed=3"]))
    assert (s.top_p, s.min_p, s.stop_at_think, s.seed) == (0.5, 0.1, True, 3)
