"""Short end-to-end runs of every stage on a tiny model (seconds, not minutes)."""

import json
from pathlib import Path

import pytest
from helpers import tiny_run

from mathrecipe.cli import main
from mathrecipe.recipe import load_recipe

TINY = tiny_run(
    48, 6, 32, None,  # the recipe's 100 dev problems
    "sft.epochs=2", "sft.per_device_train_batch_size=8", "sft.logging_steps=5",
    "grpo.max_steps=2", "grpo.per_device_train_batch_size=8", "grpo.num_generations=4", "grpo.logging_steps=1",
    "grpo.max_completion_length=40", "rewards.cosine.max_len=40",
    "eval.samples=2", "eval.max_new_tokens=40",
)


def _samples(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _error_line(stderr: str) -> str:
    """The one ``mathrecipe: error:`` line a refused command prints (progress bars aside), and no traceback."""
    lines = [x for x in stderr.splitlines() if x.startswith("mathrecipe: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


@pytest.mark.slow
def test_run_all_stages_writes_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["-q", "run", f"output_dir={out}", *TINY, "sft.select=best", "data.toy.n_dev=4"]) == 0
    report = json.loads((out / "report.json").read_text())
    epochs = report["sft"]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:  # each epoch's numbers are those of its samples file (6 test problems x 2 samples)
        rows = _samples(out / "sft" / f"eval-epoch{e['epoch']}.samples.jsonl")
        assert len(rows) == 12
        assert e["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 12)
        assert e["mean_tokens"] == pytest.approx(sum(r["tokens"] for r in rows) / 12)
        # dev: 4 problems x 2 samples, so a mean of 8 verdicts (a multiple of 1/8 in [0, 1])
        assert e["dev_accuracy"] * 8 == pytest.approx(round(e["dev_accuracy"] * 8)) and 0 <= e["dev_accuracy"] <= 1
    # chosen on the dev problems (disjoint from the test problems it reports)
    best = max(epochs, key=lambda e: (e["dev_accuracy"], -e["epoch"]))
    assert report["sft"]["selected_epoch"] == best["epoch"] and report["sft"]["selected_by"] == "best dev accuracy"
    test_ids = {json.loads(x)["problem"] for x in (out / "data" / "test.jsonl").read_text().splitlines()}
    dev_ids = {json.loads(x)["problem"] for x in (out / "data" / "dev.jsonl").read_text().splitlines()}
    assert dev_ids and not dev_ids & test_ids
    grpo_rows = _samples(out / "eval" / "grpo.samples.jsonl")
    assert report["grpo"]["steps"] == 2
    assert report["grpo"]["accuracy"] == pytest.approx(sum(r["correct"] for r in grpo_rows) / len(grpo_rows))
    assert report["eval"] == {"n_problems": 6, "samples": 2, "temperature": load_recipe(None).eval.temperature,
                              "max_new_tokens": 40}
    for f in ["report.md", "report.png", "recipe.yaml", "data/sft/dataset_info.json", "data/grpo/dataset_info.json",
              "data/data_report.json", "data/test.jsonl", "grpo/final/config.json",
              "eval/grpo.samples.jsonl", "sft/eval-epoch1.samples.jsonl"]:
        assert (out / f).exists(), f
    # the saved stages are standard HF folders
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(report["grpo"]["checkpoint"])
    AutoTokenizer.from_pretrained(report["sft"]["selected_checkpoint"])
    samples = [json.loads(x) for x in (out / "eval" / "grpo.samples.jsonl").read_text().splitlines()]
    assert len(samples) == 12 and {"id", "sample", "completion", "tokens", "extracted", "correct"} <= set(samples[0])
    assert "report.md" in capsys.readouterr().out
    # the resolved recipe reloads to the same recipe
    assert load_recipe(out / "recipe.yaml").to_dict()["sft"]["epochs"] == 2


@pytest.mark.slow
def test_grpo_stage_alone_from_a_checkpoint(tmp_path, tiny_model_dir):
    out = tmp_path / "grpo-only"
    # a non-toy model with the toy data: point the recipe at files written by a first data step
    from mathrecipe.pipeline import prepare_data

    paths = prepare_data(load_recipe(None, ["data.toy.n_sft=8", "data.toy.n_test=4", "data.toy.n_grpo=16"]),
                         tmp_path / "data", str(tiny_model_dir))
    args = [f"output_dir={out}", f"model.name_or_path={tiny_model_dir}", "data.source=files",
            f"data.grpo_path={paths['grpo']}", f"data.test_path={paths['test']}", "sft.enabled=false",
            *[a for a in TINY if a.startswith(("grpo.", "rewards.", "eval."))]]
    assert main(["-q", "grpo", *args]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "sft" not in report and report["grpo"]["steps"] == 2
    assert report["start"]["name"] == "start model" and "accuracy" in report["start"]
    # the effect verdicts' thresholds are the toy task's: not judged on other data unless the recipe asks
    assert "verdicts" not in report and "Verdict" not in (out / "report.md").read_text()


@pytest.mark.slow
def test_grpo_from_the_runs_own_sft_checkpoint_continues_the_run(tmp_path, capsys):
    """The README's stage-by-stage path: `sft`, then `grpo ... model.name_or_path=OUT/sft/checkpoint-N` on the same
    output_dir adds the GRPO stage (no conflict); --restart refuses to delete the model it would start from."""
    out = tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith("grpo.max_steps")] + ["grpo.max_steps=1", "data.toy.n_sft=16"]
    assert main(["-q", "sft", f"output_dir={out}", *tiny]) == 0
    ckpts = sorted((out / "sft").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    first, last = ckpts[0], ckpts[-1]  # epochs 1 and 2; `run` would start GRPO from the last
    capsys.readouterr()
    assert main(["-q", "grpo", f"output_dir={out}", *tiny, f"model.name_or_path={first}"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert [e["epoch"] for e in report["sft"]["epochs"]] == [1, 2] and report["reused"] == ["sft"]
    assert report["start"]["name"] == "SFT epoch 1" and report["grpo"]["steps"] == 1
    assert report["grpo"]["start_model"] == str(first)
    assert load_recipe(out / "recipe.yaml").model.name_or_path == "toy"  # the run keeps its own start
    # the toy measures the paper's effects: the verdict is in the report, printed once
    assert report["verdicts"] and printed.count("effect 2 (GRPO shortens") == 1
    # --restart would delete sft/checkpoint-N, the model it was told to start from: refused, nothing deleted
    assert main(["-q", "grpo", f"output_dir={out}", *tiny, f"model.name_or_path={first}", "--restart"]) == 2
    err = capsys.readouterr().err
    err = _error_line(err)
    assert f"--restart would delete {out}" in err and f"model.name_or_path={first}" in err
    assert (first / "model.safetensors").is_file()
    # the whole run would start GRPO from the last epoch: this output_dir's GRPO started elsewhere
    assert main(["-q", "run", f"output_dir={out}", *tiny]) == 2
    assert f"holds GRPO started from {first.resolve()}" in _error_line(capsys.readouterr().err)
    assert last.is_dir()


def test_a_local_model_path_that_is_gone_is_never_sent_to_the_hub(tmp_path):
    from mathrecipe.errors import MathRecipeError
    from mathrecipe.modeling import load_tokenizer
    from mathrecipe.pipeline import prepare_data

    gone = tmp_path / "run" / "sft" / "checkpoint-2"
    with pytest.raises(MathRecipeError, match="no such file or folder"):
        load_tokenizer(str(gone), load_recipe(None).model)
    with pytest.raises(MathRecipeError, match="no such file or folder"):  # the toy data step counts tokens with it
        prepare_data(load_recipe(None, ["data.toy.n_sft=8", "data.toy.n_test=2", "data.toy.n_grpo=8"]),
                     tmp_path / "data", str(gone))


def test_grpo_prompts_longer_than_the_context_are_refused_before_training(tmp_path, capsys, tiny_model_dir):
    from transformers import AutoConfig

    context = AutoConfig.from_pretrained(tiny_model_dir).max_position_embeddings
    grpo = tmp_path / "grpo.jsonl"
    rows = [{"prompt": "Compute 10 + 10.", "answer": "20"}, {"prompt": "Compute 1 + 1. " * context, "answer": "2"}]
    grpo.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = tmp_path / "test.jsonl"
    test.write_text('{"problem": "Compute 10 + 10.", "answer": "20"}\n')
    rc = main(["run", f"output_dir={tmp_path / 'o'}", f"model.name_or_path={tiny_model_dir}", "data.source=files",
               "sft.enabled=false", f"data.grpo_path={grpo}", f"data.test_path={test}"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    err = _error_line(err)
    assert f"GRPO data {grpo}" in err and "1 prompt(s)" in err and "row 2 (" in err and f"context of {context}" in err
    assert not (tmp_path / "o" / "grpo").exists()  # refused before any training


def test_paged_rollouts_are_refused_where_trl_would_cast_the_fp32_masters_to_bf16(monkeypatch, capsys):
    """TRL 1.16's continuous batching runs ``unwrapped_model.to(torch.bfloat16)`` before each generation when bf16 is
    on (GRPOTrainer._generate_single_turn) and never casts back; on a GPU (bf16 compute) paged is refused before any
    compute. On CPU (fp32 compute) TRL casts nothing and paged is allowed."""
    import torch

    from mathrecipe.grpo import check_backend_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine, whatever this one has
    check_backend_precision(load_recipe(None, ["grpo.backend=paged"]))  # fp32: nothing cast
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert main(["run", "grpo.backend=paged", "sft.enabled=false"]) == 2
    err = _error_line(capsys.readouterr().err)
    assert "grpo.backend=paged with bf16 compute" in err and "grpo.backend=hf" in err


def test_cli_errors_name_the_culprit(tmp_path, capsys, tiny_model_dir):
    assert main(["run", "sft.epoch=3"]) == 2
    assert "unknown recipe key 'sft.epoch'" in capsys.readouterr().err
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"id": 1, "problem": "Compute 10 + 10."}\n')
    grpo = tmp_path / "grpo.jsonl"
    grpo.write_text('{"prompt": "Compute 10 + 10.", "answer": "20"}\n')
    rc = main(["run", f"output_dir={tmp_path / 'o'}", f"model.name_or_path={tiny_model_dir}", "data.source=files",
               "sft.enabled=false", f"data.grpo_path={grpo}", f"data.test_path={bad}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "missing column 'answer'" in err and str(bad) in err


def test_help_texts():
    for cmd in ([], ["run"], ["sft"], ["grpo"], ["grade"]):
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0


@pytest.mark.parametrize("key", ["data.test_path", "data.dev_path"])
def test_held_out_prompts_too_long_are_refused_before_any_training(tmp_path, capsys, tiny_model_dir, key):
    """Issue 22.3 follow-up: a held-out or dev problem whose prompt plus eval.max_new_tokens exceeds the model's
    context (the tiny model's 1024 positions) is refused by the preflight, naming the key and the row; it used to be
    found only by the first in-run evaluation, after an epoch of training."""
    from mathrecipe.prompts import SYSTEM_PROMPT

    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": f"Compute {a} + 10."},
        {"role": "assistant", "content": f"<think>\n{a} + 10 = {a + 10}\n</think>\n\\boxed{{{a + 10}}}"}]}) + "\n"
        for a in range(10, 18)))
    fine = [{"id": "a", "problem": "Compute 10 + 10.", "answer": "20"}]
    long = fine + [{"id": "big", "problem": "Compute " + "1 + " * 600 + "1.", "answer": "601"}]
    for name, rows in (("fine.jsonl", fine), ("long.jsonl", long)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = {"data.test_path": tmp_path / "fine.jsonl", "data.dev_path": tmp_path / "fine.jsonl", key: tmp_path / "long.jsonl"}
    out = tmp_path / "o"
    rc = main(["run", f"output_dir={out}", f"model.name_or_path={tiny_model_dir}", "data.source=files",
               f"data.sft_path={sft}", *(f"{k}={v}" for k, v in paths.items()), "grpo.enabled=false",
               "sft.select=best", "sft.epochs=1", "sft.per_device_train_batch_size=8", "eval.max_new_tokens=16"])
    assert rc == 2
    err = _error_line(capsys.readouterr().err)
    assert f"{key} {paths[key]}" in err and "row 2 (id big)" in err and "context of 1024 tokens" in err, err
    assert not (out / "sft").exists()  # nothing trained


def test_a_run_folder_from_before_the_table_of_sources_resumes(tmp_path):
    """Issue 19.2: data build's flat source keys became data.build.sources. `mathrecipe run` reads neither (the toy
    builds from its own task), so a run folder whose recipe.yaml holds the old keys resumes instead of being
    refused as a run 'made with other settings'; any other difference still is."""
    import yaml

    from mathrecipe.errors import MathRecipeError
    from mathrecipe.preflight import check_output_dir

    recipe = load_recipe(None, [f"output_dir={tmp_path}"])
    old = recipe.to_dict()
    build = old["data"]["build"]
    del build["sources"]
    build.update({"openr1": "open-r1/OpenR1-Math-220k", "openr1_split": "train", "long_min_tokens": 12800,
                  "long_min_accuracy": 0.5, "n_long": 3000, "mid_min_accuracy": 0.5, "mid_max_accuracy": 0.75,
                  "n_mid": 3000, "openr1_hard": "hoanganhpham/openr1_hard", "openr1_hard_split": "train",
                  "light_r1": "qihoo360/Light-R1-SFTData", "light_r1_file": "stage2-3k.json"})
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert check_output_dir(recipe, tmp_path) == recipe.to_dict()
    with pytest.raises(MathRecipeError, match=r"other settings \(data.build.ngram differ\)"):
        check_output_dir(load_recipe(None, [f"output_dir={tmp_path}", "data.build.ngram=5"]), tmp_path)
