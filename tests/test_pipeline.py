"""Short end-to-end runs of every stage on a tiny model (seconds, not minutes)."""

import json

import pytest

from mathrecipe.cli import main
from mathrecipe.recipe import load_recipe

TINY = [
    "data.toy.n_sft=48", "data.toy.n_test=6", "data.toy.n_rl=32",
    "model.toy.hidden_size=32", "model.toy.num_layers=1", "model.toy.num_heads=2", "model.toy.intermediate_size=64",
    "sft.epochs=2", "sft.batch_size=8", "sft.logging_steps=5",
    "grpo.max_steps=2", "grpo.batch_size=8", "grpo.num_generations=4", "grpo.logging_steps=1",
    "grpo.max_completion_length=40", "rewards.cosine.max_len=40",
    "eval.samples=2", "eval.max_new_tokens=40",
]


@pytest.mark.slow
def test_run_all_stages_writes_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["-q", "run", f"output_dir={out}", *TINY, "sft.select=best", "data.toy.n_dev=4"]) == 0
    report = json.loads((out / "report.json").read_text())
    epochs = report["sft"]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert 0 <= e["accuracy"] <= 1 and e["mean_tokens"] > 0 and 0 <= e["dev_accuracy"] <= 1
    # chosen on the dev problems (disjoint from the held-out ones it reports)
    best = max(epochs, key=lambda e: (e["dev_accuracy"], -e["epoch"]))
    assert report["sft"]["selected_epoch"] == best["epoch"] and report["sft"]["selected_by"] == "best dev accuracy"
    test_ids = {json.loads(x)["problem"] for x in (out / "data" / "test.jsonl").read_text().splitlines()}
    dev_ids = {json.loads(x)["problem"] for x in (out / "data" / "dev.jsonl").read_text().splitlines()}
    assert dev_ids and not dev_ids & test_ids
    assert report["grpo"]["steps"] == 2 and 0 <= report["grpo"]["accuracy"] <= 1
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

    paths = prepare_data(load_recipe(None, ["data.toy.n_sft=8", "data.toy.n_test=4", "data.toy.n_rl=16"]),
                         tmp_path / "data", str(tiny_model_dir))
    args = [f"output_dir={out}", f"model.name_or_path={tiny_model_dir}", "data.source=files",
            f"data.grpo_path={paths['grpo']}", f"data.eval_path={paths['test']}", "sft.enabled=false",
            *[a for a in TINY if a.startswith(("grpo.", "rewards.", "eval."))]]
    assert main(["-q", "grpo", *args]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "sft" not in report and report["grpo"]["steps"] == 2
    assert report["start"]["name"] == "start model" and "accuracy" in report["start"]


def test_cli_errors_name_the_culprit(tmp_path, capsys, tiny_model_dir):
    assert main(["run", "sft.epoch=3"]) == 2
    assert "unknown recipe key 'sft.epoch'" in capsys.readouterr().err
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"id": 1, "problem": "Compute 10 + 10."}\n')
    grpo = tmp_path / "grpo.jsonl"
    grpo.write_text('{"prompt": "Compute 10 + 10.", "answer": "20"}\n')
    rc = main(["run", f"output_dir={tmp_path / 'o'}", f"model.name_or_path={tiny_model_dir}", "data.source=files",
               "sft.enabled=false", f"data.grpo_path={grpo}", f"data.eval_path={bad}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "missing column(s) 'answer'" in err and str(bad) in err


def test_help_texts():
    for cmd in ([], ["run"], ["sft"], ["grpo"], ["grade"]):
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0
