"""Mistakes that used to surface after hours of training stop before the first step, as one line naming the keys."""

import json
import time

import pytest

from mathrecipe.cli import main

TINY = ["data.toy.n_sft=16", "data.toy.n_test=4", "data.toy.n_rl=16", "data.toy.n_dev=4",
        "model.toy.hidden_size=32", "model.toy.num_layers=1", "model.toy.num_heads=2", "model.toy.intermediate_size=64"]


def _one_line_error(capsys, *words):
    text = capsys.readouterr().err
    assert "Traceback" not in text, text
    errs = [x for x in text.splitlines() if x.startswith("mathrecipe: error:")]
    assert len(errs) == 1, text  # exactly one error line (progress bars may share stderr)
    err = errs[0]
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("overrides, words", [
    (["sft.select=best", "sft.eval_each_epoch=false"], ["sft.select=best", "sft.eval_each_epoch"]),
    (["grpo.beta=0"], ["grpo.max_kl", "grpo.beta"]),  # the guard could never fire: no KL is computed
    (["sft.extra={learning_rate: 0.1}"], ["sft.extra.learning_rate", "sft.learning_rate"]),
    (["grpo.extra={num_generations: 4}"], ["grpo.extra.num_generations", "grpo.num_generations"]),
    (["sft.select=best", "data.toy.n_dev=0"], ["sft.select=best", "data.toy.n_dev"]),
])
def test_bad_settings_stop_before_anything_runs(tmp_path, capsys, overrides, words):
    out = tmp_path / "run"
    t = time.monotonic()
    assert main(["run", f"output_dir={out}", *TINY, *overrides]) == 2
    assert time.monotonic() - t < 10
    _one_line_error(capsys, *words)
    assert not (out / "sft").exists()


def test_select_best_with_files_needs_a_dev_set(tmp_path, capsys):
    ev = tmp_path / "test.jsonl"
    ev.write_text(json.dumps({"problem": "Compute 1 + 1.", "answer": "2"}) + "\n")
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"prompt": "Compute 1 + 1.", "completion": "\\boxed{2}"}) + "\n")
    assert main(["run", f"output_dir={tmp_path / 'o'}", "model.name_or_path=" + str(tmp_path), "data.source=files",
                 f"data.sft_path={sft}", f"data.eval_path={ev}", "grpo.enabled=false", "sft.select=best"]) == 2
    # the model folder is checked first: it has no weights
    _one_line_error(capsys, "missing", "weights")


def test_over_long_traces_are_refused_with_the_count(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", f"output_dir={out}", *TINY, "sft.max_length=50", "grpo.enabled=false"]) == 2
    err = _one_line_error(capsys, "sft.max_length=50", "data.build.max_tokens")
    assert "16 of 16 rows" in err or " of 16 rows" in err
    assert not list((out / "sft").glob("checkpoint-*"))


def test_a_rerun_with_other_settings_is_refused_not_mixed(tmp_path, capsys):
    out = tmp_path / "run"
    (out).mkdir()
    from mathrecipe.recipe import dump_recipe, load_recipe

    dump_recipe(load_recipe(None, [f"output_dir={out}", *TINY]), out / "recipe.yaml")
    assert main(["run", f"output_dir={out}", *TINY, "sft.learning_rate=0.01", "sft.enabled=false",
                 "grpo.enabled=false"]) == 2
    _one_line_error(capsys, "sft.learning_rate", "--restart")


def test_a_stage_given_another_system_prompt_than_its_data_was_built_with_stops(tmp_path, capsys, tiny_model_dir):
    """The system prompt travels with a built set; training it under another prompt would make training and
    evaluation prompts differ."""
    from mathrecipe.pipeline import prepare_data
    from mathrecipe.recipe import load_recipe

    paths = prepare_data(load_recipe(None, TINY), tmp_path / "data", str(tiny_model_dir))
    assert main(["run", f"output_dir={tmp_path / 'run'}", f"model.name_or_path={tiny_model_dir}",
                 "data.source=files", f"data.sft_path={paths['sft']}", f"data.grpo_path={paths['grpo']}",
                 f"data.eval_path={paths['test']}", "data.system_prompt=Think hard."]) == 2
    err = _one_line_error(capsys, "Think hard.", "Please reason step by step", "data.system_prompt")
    assert "SFT data" in err
    assert not (tmp_path / "run" / "sft").exists()
