"""`mathrecipe compare` on a tiny run folder (SFT vs GRPO) and on eval folders."""

import json

import pytest

from mathrecipe.cli import main
from mathrecipe.evaluate.compare import compare


def _rows(correct_ids, tokens, problems=20, samples=4, bench=None):
    rows = []
    for i in range(problems):
        for j in range(samples):
            ok = i in correct_ids
            row = {"id": f"toy-{i}", "sample": j, "completion": "...", "tokens": tokens, "finished": tokens < 100,
                   "extracted": "1" if ok else "2", "answer": "1", "correct": ok,
                   "boxes": [[tokens // 2, ok], [tokens - 1, ok]]}
            rows.append(row if bench is None else {"benchmark": bench, **row})
    return rows


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture()
def run_dir(tmp_path):
    d = tmp_path / "run"
    # SFT epoch 2 (selected) solves 15 of 20 problems in 100 tokens; GRPO the same 15 plus one, in 60
    _write(d / "sft" / "eval-epoch1.samples.jsonl", _rows(set(range(3)), 150))
    _write(d / "sft" / "eval-epoch2.samples.jsonl", _rows(set(range(15)), 100))
    _write(d / "eval" / "grpo.samples.jsonl", _rows(set(range(16)), 60))
    (d / "report.json").write_text(json.dumps({
        "sft": {"selected_epoch": 2, "epochs": [{"epoch": 1, "accuracy": 0.15}, {"epoch": 2, "accuracy": 0.75}]},
        "start": {"name": "SFT epoch 2", "accuracy": 0.75}, "grpo": {"accuracy": 0.8}}))
    return d


def test_compare_run_dir_prints_sft_vs_grpo_and_writes_the_plot(run_dir, capsys):
    assert main(["compare", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "## test" in out and "| SFT epoch 2 | 20 | 4 | 75.0" in out and "| GRPO | 20 | 4 | 80.0" in out
    assert "+5.0" in out and "-40 (-40, -40)" in out  # paired: +1 problem of 20, 40 tokens shorter on every one
    files = run_dir / "compare"
    assert (files / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((files / "compare.json").read_text())
    table = result["benchmarks"]["test"]["table"]
    assert [r["label"] for r in table] == ["SFT epoch 2", "GRPO"]
    diff = table[1]["vs_first"]
    assert diff["problems"] == 20 and diff["accuracy"][0] == pytest.approx(0.05)
    assert diff["accuracy"][1] <= 0.05 <= diff["accuracy"][2] and diff["mean_tokens"] == [-40.0, -40.0, -40.0]
    curves = result["benchmarks"]["test"]["budget_curves"]
    grpo = dict((b, a) for b, a in curves["GRPO"])
    assert grpo[max(grpo)] == pytest.approx(0.8) and min(grpo.values()) == 0.0  # budget below every box: 0
    sft = dict((b, a) for b, a in curves["SFT epoch 2"])
    assert sft[60] == pytest.approx(0.75)  # the first box (50 tokens) already counts at 60


def test_compare_is_seeded(run_dir, tmp_path):
    a = compare([run_dir], tmp_path / "a", seed=1, resamples=500)
    b = compare([run_dir], tmp_path / "b", seed=1, resamples=500)
    assert a["benchmarks"] == b["benchmarks"]


def test_compare_grpo_started_without_sft(tmp_path):
    d = tmp_path / "run"
    _write(d / "eval" / "start.samples.jsonl", _rows({0, 1}, 90))
    _write(d / "eval" / "grpo.samples.jsonl", _rows({0, 1, 2}, 50))
    (d / "report.json").write_text(json.dumps({"start": {"name": "start model"}, "grpo": {}}))
    result = compare([d])
    assert [r["label"] for r in result["benchmarks"]["test"]["table"]] == ["start model", "GRPO"]


def test_compare_eval_folders_per_benchmark(tmp_path, capsys):
    def eval_dir(name, rows, samples):
        d = tmp_path / name
        _write(d / "samples.jsonl", rows)
        (d / "eval_config.json").write_text(json.dumps({"format": 2, "sampling": {}, "benchmarks": {
            b: {"samples": samples, "data": "x"} for b in {r["benchmark"] for r in rows}}}))
        return d

    a = eval_dir("base", _rows({0}, 80, 5, 2, "aime24") + _rows({0, 1, 2}, 50, 10, 2, "math500"), 2)
    partial = _rows({0, 1}, 40, 5, 2, "aime24")[:-1]  # its last problem has 1 of 2 samples: left out
    b = eval_dir("fast", partial, 2)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--resamples", "1000"]) == 0
    out = capsys.readouterr().out
    assert "## aime24" in out and "## math500" in out and "| fast | 4 | 2 |" in out
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["label"] for r in result["benchmarks"]["aime24"]["table"]] == ["base", "fast"]
    assert result["benchmarks"]["aime24"]["table"][1]["vs_first"]["problems"] == 4  # paired on common problems
    assert [r["label"] for r in result["benchmarks"]["math500"]["table"]] == ["base"]


def test_compare_errors_are_one_line(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "neither a `mathrecipe eval` folder" in capsys.readouterr().err
    (tmp_path / "report.json").write_text(json.dumps({"grpo": {}}))
    assert main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "grpo.samples.jsonl: missing" in err and len(err.strip().splitlines()) == 1


def test_compare_eval_folder_takes_what_its_last_summary_covered(tmp_path):
    d = tmp_path / "ev"
    _write(d / "samples.jsonl", _rows({0}, 80, 5, 2, "aime24") + _rows({0}, 50, 10, 2, "math500"))
    (d / "eval_config.json").write_text(json.dumps({"format": 2, "sampling": {}, "benchmarks": {
        "aime24": {"samples": 2, "data": "x"}, "math500": {"samples": 2, "data": "y"}}}))
    (d / "summary.json").write_text(json.dumps({"ids": {"aime24": ["toy-0", "toy-1"]}}))  # a --limit 2 run
    result = compare([d], tmp_path / "c")
    assert list(result["benchmarks"]) == ["aime24"]
    (s,) = [r["summary"] for r in result["benchmarks"]["aime24"]["table"]]
    assert s["n_problems"] == 2 and s["accuracy"] == 0.5


def test_a_missing_folder_says_no_such_folder(tmp_path, capsys):
    # 22.7: `compare nonexist` said "neither an eval folder nor a run folder"
    assert main(["compare", str(tmp_path / "nonexist")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mathrecipe: error: {tmp_path / 'nonexist'}: no such folder; give `mathrecipe eval --out` " \
                  "folders or run output folders"
    f = tmp_path / "samples.jsonl"
    f.write_text("")
    assert main(["compare", str(f)]) == 2
    assert "a file, not a folder" in capsys.readouterr().err


def test_a_difference_that_rounds_to_zero_has_no_sign(tmp_path, capsys):
    # 22.8: compare.md printed "-0 (-6, +6)"; the same accuracy, tokens 0.4 shorter on average
    from mathrecipe.evaluate.compare import signed

    assert [signed(x, 0) for x in (-0.4, 0.4, -0.6, 6.2, 0.0)] == ["0", "0", "-1", "+6", "0"]
    assert [signed(x, 1) for x in (-0.04, 0.05, -6.25)] == ["0.0", "+0.1", "-6.2"]
    a, b = tmp_path / "a", tmp_path / "b"
    base = _rows(set(range(10)), 50, bench="x")
    other = [{**r, "tokens": 50 - (1 if r["id"] in ("toy-0", "toy-1") else 0)} for r in base]  # mean -0.1 tokens
    for d, rows in ((a, base), (b, other)):
        _write(d / "samples.jsonl", rows)
        (d / "eval_config.json").write_text(json.dumps({"benchmarks": {"x": {"samples": 4}}, "sampling": {}}))
    assert main(["compare", str(a), str(b)]) == 0
    md = (a / "compare" / "compare.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| b |"))
    assert "-0 " not in row and "-0," not in row and "-0)" not in row and "| 0 (" in row, row
