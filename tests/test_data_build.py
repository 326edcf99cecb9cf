"""`mathrecipe data build` on fixtures in the real sources' schemas (OpenR1-Math-220k, Light-R1-SFTData)."""

import json

import pytest

from mathrecipe.cli import main
from mathrecipe.data.decontam import build_index, first_match

T = "<think>\n{work}\n\\boxed{{{ans}}}\n</think>\nSo the answer is \\boxed{{{ans}}}."


def trace(ans, words):
    return T.format(work=" ".join(["step"] * words), ans=ans)


def openr1_row(i, acc_flags, lengths, problem=None, answer=None):
    ans = str(i) if answer is None else answer
    return {
        "problem": problem or f"Find the value number {i} of the sequence defined by a recurrence relation here.",
        "answer": ans,
        "generations": [trace(ans, n) for n in lengths],
        "correctness_math_verify": acc_flags,
        "uuid": f"u{i}",
    }


@pytest.fixture()
def sources(tmp_path, shared_data):
    math500 = json.loads((shared_data / "benchmarks" / "math500_test.jsonl").read_text().splitlines()[3])
    aime25 = json.loads((shared_data / "benchmarks" / "aime2025.jsonl").read_text().splitlines()[4])
    rows = [
        # long (kept trace 84 tokens > 60) with accuracy 1.0 -> long sample candidates
        *[openr1_row(i, [True, True], [60, 80]) for i in range(0, 6)],
        # mid accuracy 0.5 (1 of 2 correct), short traces
        *[openr1_row(i, [True, False], [5, 5]) for i in range(6, 12)],
        # accuracy 0.25: neither sample
        openr1_row(12, [True, False, False, False], [5, 5, 5, 5]),
        # no verified-correct trace
        openr1_row(13, [False, False], [5, 5]),
        # missing generations
        {**openr1_row(14, [], []), "generations": [], "correctness_math_verify": []},
        # planted MATH-500 and AIME 2025 problems, reworded only in spacing and case; accuracy 0.5 -> sampled
        openr1_row(15, [True, False], [5, 5], problem="  " + math500["problem"].upper().replace(" ", "   ")),
        openr1_row(16, [True, False], [5, 5], problem=aime25["problem"].replace(" ", "\n ").lower()),
    ]
    # the shortest correct trace: generation 2 is correct and shortest
    rows.append(openr1_row(17, [False, True, True], [3, 30, 10]))
    openr1 = tmp_path / "openr1.jsonl"
    openr1.write_text("".join(json.dumps(r) + "\n" for r in rows))
    hard = tmp_path / "hard.jsonl"
    # a duplicate of problem 17 (other spacing) with a still shorter correct trace; and one new problem
    hard_rows = [openr1_row(17, [True], [2], problem="Find the value number 17 of the sequence  defined by a "
                            "recurrence relation here."), openr1_row(40, [True], [7])]
    hard.write_text("".join(json.dumps(r) + "\n" for r in hard_rows))
    light = tmp_path / "light.json"
    light_rows = [
        {"conversations": [{"from": "user", "value": f"Light problem {k}: compute the area of shape {k} now please."},
                           {"from": "assistant", "value": trace(str(k * 3), 8)}]} for k in range(4)
    ] + [
        {"conversations": [{"from": "user", "value": "Light problem without a boxed answer at all, only words."},
                           {"from": "assistant", "value": "I am not sure."}]},
        {"conversations": [{"from": "user", "value": "Light problem with no assistant turn in it at all."}]},
    ]
    light.write_text(json.dumps(light_rows))
    return {"openr1": openr1, "hard": hard, "light": light, "math500": math500, "aime25": aime25}


def sources_arg(*entries):
    """The ``data.build.sources`` override: a list of sources (JSON is YAML)."""
    return "data.build.sources=" + json.dumps([{k: str(v) if k == "path" else v for k, v in e.items()}
                                               for e in entries])


def openr1_source(path, **sample):
    """An OpenR1-Math source with the paper's sample filter (``sample``: its settings that differ)."""
    return {"kind": "openr1", "path": path, "sample": sample}


def _build(tmp_path, shared_data, tiny_model_dir, sources, *extra):
    out = tmp_path / "built"
    args = [
        "-q", "data", "build", f"output_dir={tmp_path / 'run'}", f"data.build.output_dir={out}",
        f"data.build.tokenizer={tiny_model_dir}",
        sources_arg(openr1_source(sources["openr1"], long_min_tokens=60, n_long=4, n_mid=100),
                    {"kind": "openr1", "name": "openr1_hard", "path": sources["hard"]},
                    {"kind": "light_r1", "path": sources["light"], "grpo": True}),
        f"data.build.benchmark_dir={shared_data / 'benchmarks'}", *extra,
    ]
    assert main(args) == 0
    return out, json.loads((out / "data_report.json").read_text())


def test_build_filters_dedup_shortest_trace_and_decontamination(tmp_path, shared_data, tiny_model_dir, sources):
    import datasets

    out, report = _build(tmp_path, shared_data, tiny_model_dir, sources)
    sft = datasets.load_from_disk(str(out / "sft"))
    grpo = datasets.load_from_disk(str(out / "grpo"))
    src = report["sources"]

    # OpenR1: 18 rows in; 13 has no correct trace, 14 misses generations; 4 of the 6 long rows are drawn; rows
    # 6-11, 15, 16 (accuracy 1/2) and 17 (2/3, its shortest correct trace is only 34 tokens) form the mid sample;
    # the 2 long rows not drawn (accuracy 1 > 0.75) and row 12 (accuracy 1/4) are in neither
    o = src["openr1"]
    assert o["rows_in"] == 18
    assert o["dropped"]["no verified-correct trace"] == 1
    assert o["dropped"]["missing field: generations"] == 1
    sample = next(s for s in report["steps"] if s["step"] == "openr1: sample")
    assert sample["long"] == 4 and sample["long_candidates"] == 6
    assert sample["mid"] == 9
    assert o["dropped"]["not selected (OpenR1 long/mid-accuracy sample)"] == 3
    # contamination: the planted MATH-500 and AIME 2025 problems, each reported with the item it matched
    matched = {c["matched"] for c in report["contaminated"]}
    assert f"math500:{sources['math500']['id']}" in matched
    assert f"aime25:{sources['aime25']['id']}" in matched
    assert o["dropped"]["contaminated"] == 2
    # dedup: problem 17 appears in openr1 and openr1_hard; the shortest correct trace (hard's, 2 words) wins
    p17 = [r for r in sft if "number 17 " in r["messages"][1]["content"]]
    assert len(p17) == 1 and p17[0]["source"] == "openr1_hard"
    assert p17[0]["messages"][2]["content"] == trace("17", 2)
    assert src["openr1"]["dropped"]["duplicate"] == 1
    # Light-R1: the row without a boxed answer and the one without an assistant turn are reported
    lr = src["light_r1"]
    assert lr["dropped"] == {"missing field: answer": 1, "missing field: assistant turn": 1}
    # rows out add up: every row in is either out or counted under a reason
    for s in src.values():
        assert s["rows_in"] == s["rows_out"] + sum(s["dropped"].values())
    assert len(sft) == sum(s["rows_out"] for name, s in src.items() if "GRPO" not in name)
    # TRL conversational rows with the shared system prompt
    from mathrecipe.prompts import SYSTEM_PROMPT

    assert [m["role"] for m in sft[0]["messages"]] == ["system", "user", "assistant"]
    assert sft[0]["messages"][0]["content"] == SYSTEM_PROMPT
    # GRPO: Light-R1 problems with the boxed answers of their traces
    assert len(grpo) == 4 and sorted(grpo["answer"]) == ["0", "3", "6", "9"]
    assert grpo[0]["prompt"][-1]["role"] == "user"
    assert (out / "data_report.md").exists() and (out / "data_report.png").exists()
    assert report["trace_tokens"]["count"] == len(sft)


def test_shortest_correct_trace_is_by_tokens(tmp_path, shared_data, tiny_model_dir, sources):
    import datasets

    out, _ = _build(tmp_path, shared_data, tiny_model_dir, sources)
    sft = datasets.load_from_disk(str(out / "sft"))
    long_rows = [r for r in sft if r["source"] == "openr1" and r["trace_tokens"] > 60]
    assert long_rows and all(r["messages"][2]["content"] == trace(r["answer"], 60) for r in long_rows)


def test_too_long_filter_is_counted(tmp_path, shared_data, tiny_model_dir, sources):
    import datasets

    # without max_tokens nothing is dropped, but the report says how many kept traces exceed sft.max_length
    out, report = _build(tmp_path, shared_data, tiny_model_dir, sources, "sft.max_length=50")
    check = report["length_check"]
    assert check["max_tokens"] is None and check["dropped_too_long"] == 0
    assert check["sft_max_length"] == 50 and check["over_sft_max_length"] == 4  # the 4 long OpenR1 traces
    assert check["over"] == {"50": 4, "4096": 0, "8192": 0, "16384": 0, "32768": 0}
    md = (out / "data_report.md").read_text()
    assert "Longer than sft.max_length=50 (the prompt adds more): **4**. SFT refuses a set holding any such row" in md
    assert "truncated in training" not in md  # SFT refuses them (sft.check_lengths); it never cuts them
    assert "data.build.max_tokens is null: no trace was dropped for its length." in md
    n_before = report["sft_rows"]
    # rebuilt into the same folder with max_tokens: those 4 are dropped and counted, the folder replaced whole
    out, report = _build(tmp_path, shared_data, tiny_model_dir, sources, "data.build.max_tokens=50",
                         "sft.max_length=50")
    assert report["sources"]["openr1"]["dropped"]["too long"] == 4
    assert report["length_check"]["dropped_too_long"] == 4 and report["length_check"]["over_sft_max_length"] == 0
    assert "Dropped as longer than data.build.max_tokens=50: **4**." in (out / "data_report.md").read_text()
    assert len(datasets.load_from_disk(str(out / "sft"))) == report["sft_rows"] == n_before - 4
    assert sorted(p.name for p in out.iterdir()) == ["data_report.json", "data_report.md", "data_report.png", "grpo",
                                                    "sft"]  # no temporary files or folders left behind


def test_built_sets_carry_their_system_prompt(tmp_path, shared_data, tiny_model_dir, sources):
    from mathrecipe.data.io import DataError, check_system_prompt, dataset_system_prompt

    prompt = "Think it through, then give the answer in \\boxed{}."
    out, report = _build(tmp_path, shared_data, tiny_model_dir, sources, f"data.system_prompt={json.dumps(prompt)}")
    assert report["system_prompt"] == prompt
    for part in ("sft", "grpo"):
        meta = json.loads((out / part / "mathrecipe.json").read_text())
        assert meta["system_prompt"] == prompt and meta["set"] == part
        assert dataset_system_prompt(out / part) == prompt
        check_system_prompt(out / part, prompt, "SFT data")
    with pytest.raises(DataError) as e:
        check_system_prompt(out / "sft", "Please reason step by step.", "SFT data (data.sft_path)")
    msg = str(e.value)
    assert "\n" not in msg and str(out / "sft") in msg and "SFT data (data.sft_path)" in msg
    assert "'Think it through" in msg and "'Please reason step by step.'" in msg and "mathrecipe.json" in msg
    assert f"data.system_prompt={json.dumps(prompt)}" in msg and "rebuild" in msg
    # without the metadata file, the rows' system turn says the same
    (out / "sft" / "mathrecipe.json").unlink()
    assert dataset_system_prompt(out / "sft") == prompt
    with pytest.raises(DataError, match="from the system turn of its column 'messages'"):
        check_system_prompt(out / "sft", None, "SFT data")


def test_built_sets_train_through_the_stages(tmp_path, shared_data, tiny_model_dir, sources):
    out, _ = _build(tmp_path, shared_data, tiny_model_dir, sources)
    bench = tmp_path / "eval.jsonl"
    bench.write_text('{"id": "e1", "problem": "Compute 10 + 10.", "answer": "20"}\n')
    run = tmp_path / "run2"
    assert main(["-q", "run", f"output_dir={run}", f"model.name_or_path={tiny_model_dir}", "data.source=files",
                 f"data.sft_path={out / 'sft'}", f"data.grpo_path={out / 'grpo'}", f"data.test_path={bench}",
                 "sft.epochs=1", "sft.per_device_train_batch_size=4", "grpo.max_steps=1", "grpo.per_device_train_batch_size=8",
                 "grpo.num_generations=4", "grpo.max_completion_length=16", "rewards.cosine.max_len=16",
                 "eval.samples=1", "eval.max_new_tokens=16"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["sft"]["train_rows"] > 0 and report["grpo"]["train_rows"] == 4


def test_source_missing_a_column_names_source_and_column(tmp_path, shared_data, tiny_model_dir, sources, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "p", "answer": "1", "generations": ["x"]}\n')
    rc = main(["data", "build", f"data.build.output_dir={tmp_path / 'o'}", f"data.build.tokenizer={tiny_model_dir}",
               sources_arg(openr1_source(bad)), "data.build.decontaminate=[]"])
    assert rc == 2
    assert "source 'openr1': missing column(s) 'correctness_math_verify'" in capsys.readouterr().err


def test_real_training_rows_against_the_real_benchmarks(tmp_path, shared_data, tiny_model_dir):
    """195 real historical AIME rows: two of them (AIME 2010 I #6, AIME 2015 II #6) are in MATH-500 itself."""
    from mathrecipe.data.benchmarks import load_benchmark

    rows = [json.loads(x) for x in
            (shared_data / "train-samples" / "deepscaler_aime1983_2023_train_sample.jsonl").read_text().splitlines()]
    benches = dict(load_benchmark(b, shared_data / "benchmarks") for b in ("math500", "aime24", "aime25", "amc23"))
    index = build_index(benches, 8)
    leaked = {r["id"]: first_match(r["problem"], index, 0.5) for r in rows}
    leaked = {k: v[0] for k, v in leaked.items() if v}
    assert leaked == {"aime2010-1-6-row560": "math500:test/intermediate_algebra/2146.json",
                      "aime2015-2-6-row725": "math500:test/intermediate_algebra/1411.json"}
    # any shared 8-gram (the default) also flags boilerplate, and still the two real leaks
    loose = [r["id"] for r in rows if first_match(r["problem"], index)]
    assert set(leaked) <= set(loose) and len(loose) > 10
    # the same rows as a build source: the leaks are dropped and reported with the item they matched
    src = tmp_path / "aime.jsonl"
    src.write_text("".join(json.dumps({"problem": r["problem"], "answer": r["answer"], "generations": [r["solution"]],
                                       "correctness_math_verify": [True]}) + "\n" for r in rows))
    out = tmp_path / "built"
    assert main(["-q", "data", "build", f"data.build.output_dir={out}", f"data.build.tokenizer={tiny_model_dir}",
                 sources_arg(openr1_source(src, long_min_tokens=0, long_min_accuracy=0, n_long=None)),
                 "data.build.min_overlap=0.5", f"data.build.benchmark_dir={shared_data / 'benchmarks'}"]) == 0
    report = json.loads((out / "data_report.json").read_text())
    assert sorted(c["matched"] for c in report["contaminated"]) == sorted(leaked.values())
    assert report["sft_rows"] == len(rows) - 2 - report["sources"]["openr1"]["dropped"].get("duplicate", 0)


def test_system_prompt_of_hand_made_sets(tmp_path):
    from mathrecipe.data.io import DataError, check_system_prompt, dataset_system_prompt

    def rows(path, objs):
        path.write_text("".join(json.dumps(o) + "\n" for o in objs))
        return path

    sys_turn = {"role": "system", "content": "Be brief."}
    user, asst = {"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "\\boxed{2}"}
    same = rows(tmp_path / "same.jsonl", [{"messages": [sys_turn, user, asst]}] * 3)
    assert dataset_system_prompt(same) == "Be brief."
    bare = rows(tmp_path / "bare.jsonl", [{"prompt": [user], "answer": "2"}] * 2)
    assert dataset_system_prompt(bare) is None
    check_system_prompt(bare, "", "GRPO data")  # "" and None both mean no system turn
    with pytest.raises(DataError, match=r"none \(no system turn\).*data.system_prompt=null"):
        check_system_prompt(bare, "Be brief.", "GRPO data")
    mixed = rows(tmp_path / "mixed.jsonl", [{"messages": [sys_turn, user, asst]}, {"messages": [user, asst]}])
    with pytest.raises(DataError, match=r"mixed.jsonl: its rows carry different system prompts \(row 1: 'Be brief.', "
                                        r"row 2: none"):
        dataset_system_prompt(mixed)
    # plain-text prompts: the GRPO stage wraps them with the recipe's prompt, so any expected prompt passes
    text = rows(tmp_path / "text.jsonl", [{"prompt": "1+1?", "answer": "2"}])
    assert dataset_system_prompt(text) is None
    check_system_prompt(text, "Be brief.", "GRPO data")
    # metadata beside a file wins over its rows
    (tmp_path / "same.jsonl.mathrecipe.json").write_text(json.dumps({"system_prompt": "Other."}))
    assert (tmp_path / "same.jsonl.mathrecipe.json").exists() and dataset_system_prompt(same) == "Other."
    (tmp_path / "same.jsonl.mathrecipe.json").write_text("{oops")
    with pytest.raises(DataError, match=r"same.jsonl.mathrecipe.json: not valid JSON"):
        dataset_system_prompt(same)


def test_a_source_that_is_not_utf8_or_empty_is_one_line(tmp_path, shared_data, tiny_model_dir, sources, capsys):
    # 22.5: a UnicodeDecodeError traceback, and datasets' bare StopIteration on an empty JSONL
    def build(openr1):
        return main(["-q", "data", "build", f"output_dir={tmp_path / 'run'}", f"data.build.output_dir={tmp_path / 'b'}",
                     f"data.build.tokenizer={tiny_model_dir}", sources_arg(openr1_source(openr1)),
                     f"data.build.benchmark_dir={shared_data / 'benchmarks'}"])

    def one_line():
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.strip()]
        assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("mathrecipe: error: "), err
        return lines[0]

    bad = tmp_path / "latin1.jsonl"
    good = sources["openr1"].read_bytes().splitlines(keepends=True)
    bad.write_bytes(b"".join(good[:3]) + good[3].replace(b"sequence", "séquence".encode("latin-1")))
    assert build(bad) == 2
    assert "latin1.jsonl, line 4: not UTF-8 text (byte 0xe9" in one_line()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert build(empty) == 2
    assert f"data.build.sources[0].path: {empty} is empty (no rows)" in one_line()
    assert not (tmp_path / "b").exists()


def test_a_new_kind_of_source_is_one_registered_normaliser(tmp_path, shared_data, tiny_model_dir, sources,
                                                            monkeypatch):
    """Issue 19.2: a training-data source of a new schema takes one normaliser in the registry, nothing else: the
    recipe names it in its table of sources, for the SFT set and (with Light-R1's problems) the GRPO set."""
    import datasets

    from mathrecipe.data import sources as sources_mod

    def normalise_qa(ds, source, num_proc=1, batch_size=1000):  # rows: question, solution (boxed), no generations
        def fn(batch):
            rows = [sources_mod._row(source, q, "", [sol], 1.0, "") for q, sol in zip(batch["question"],
                                                                                       batch["solution"])]
            return sources_mod._columns(rows)

        return ds.map(fn, batched=True, remove_columns=ds.column_names)

    monkeypatch.setitem(sources_mod.SOURCES, "qa", normalise_qa)
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"QA problem {k}: what is {k} plus {k} in this question here?",
                                      "solution": trace(str(2 * k), 4)}) + "\n" for k in range(1, 4)))
    out = tmp_path / "built"
    assert main(["-q", "data", "build", f"data.build.output_dir={out}", f"data.build.tokenizer={tiny_model_dir}",
                 sources_arg({"kind": "qa", "path": qa, "grpo": True},
                             {"kind": "light_r1", "path": sources["light"], "grpo": True}),
                 "data.build.decontaminate=[]"]) == 0
    report = json.loads((out / "data_report.json").read_text())
    assert report["sources"]["qa"]["rows_out"] == 3 and report["sources"]["qa (GRPO problems)"]["rows_out"] == 3
    sft, grpo = datasets.load_from_disk(str(out / "sft")), datasets.load_from_disk(str(out / "grpo"))
    assert sorted(set(sft["source"])) == ["light_r1", "qa"] and len(sft) == 3 + 4
    assert sorted(grpo["answer"]) == ["0", "2", "3", "4", "6", "6", "9"]  # both sources' problems, one set
    assert sorted(set(grpo["source"])) == ["light_r1 (GRPO problems)", "qa (GRPO problems)"]


@pytest.mark.parametrize("override, words", [
    ("data.build.openr1=open-r1/OpenR1-Math-220k", ["data.build.openr1 is now", "data.build.sources: a list of"]),
    ("data.build.n_long=10", ["data.build.n_long is now data.build.sources[N].sample.n_long"]),
    ("data.build.light_r1_file=x.json", ["data.build.light_r1_file is now", "data_files"]),
    ('data.build.sources=[{kind: tsv, path: x.tsv}]', ["data.build.sources[0].kind: unknown source kind 'tsv'",
                                                       "openr1, light_r1"]),
    ('data.build.sources=[{kind: openr1}]', ["data.build.sources[0].path is not set"]),
    ('data.build.sources=[{kind: openr1, path: a}, {kind: openr1, path: b}]',
     ["data.build.sources[1]: the name 'openr1' is also sources[0]'s"]),
    ('data.build.sources=[{kind: openr1, path: a, sft: false}]', ["data.build.sources[0] feeds no set"]),
    ('data.build.sources=[{kind: openr1, path: a, sample: {mid_min_accuracy: 0.9}}]',
     ["data.build.sources[0].sample: mid_min_accuracy <= mid_max_accuracy"]),
    ('data.build.sources=[{kind: openr1, path: a, smaple: {}}]', ["unknown recipe key 'data.build.sources[0].smaple'",
                                                                 "did you mean"]),
])
def test_the_sources_table_and_old_keys_are_one_line(override, words, tiny_model_dir, tmp_path, capsys):
    """Issue 19.2: the keys that moved into data.build.sources name the new shape; a source table's mistakes name
    the entry and the key."""
    assert main(["data", "build", f"data.build.output_dir={tmp_path / 'o'}", f"data.build.tokenizer={tiny_model_dir}",
                 override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mathrecipe: error: "), err
    for w in words:
        assert w in err[0], err[0]
    assert not (tmp_path / "o").exists()
