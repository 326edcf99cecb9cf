"""Mistakes that used to surface after hours of training stop before the first step, as one line naming the keys."""

import json
from pathlib import Path

import pytest
from helpers import tiny_run

from mathrecipe.cli import main

ROOT = Path(__file__).resolve().parents[1]

TINY = tiny_run(16, 4, 16, 4)


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
    assert main(["run", f"output_dir={out}", *TINY, *overrides]) == 2
    assert not out.exists()  # refused before anything ran or was written (not a wall-clock bound: 2 busy cores)
    _one_line_error(capsys, *words)
    assert not (out / "sft").exists()


def test_select_best_with_files_needs_a_dev_set(tmp_path, capsys):
    ev = tmp_path / "test.jsonl"
    ev.write_text(json.dumps({"problem": "Compute 1 + 1.", "answer": "2"}) + "\n")
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"prompt": "Compute 1 + 1.", "completion": "\\boxed{2}"}) + "\n")
    assert main(["run", f"output_dir={tmp_path / 'o'}", "model.name_or_path=" + str(tmp_path), "data.source=files",
                 f"data.sft_path={sft}", f"data.test_path={ev}", "grpo.enabled=false", "sft.select=best"]) == 2
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
    import yaml

    from mathrecipe.recipe import load_recipe

    (out / "recipe.yaml").write_text(yaml.safe_dump(load_recipe(None, [f"output_dir={out}", *TINY]).to_dict()))
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
                 f"data.test_path={paths['test']}", "data.system_prompt=Think hard."]) == 2
    err = _one_line_error(capsys, "Think hard.", "Please reason step by step", "data.system_prompt")
    assert "SFT data" in err
    assert not (tmp_path / "run" / "sft").exists()


# ------------------------------------------------------------------------- issue 22, items 5 and 7: one line, anywhere


def test_overrides_after_an_option_are_taken(tmp_path, capsys):
    # 22.7: `plan recipes/toy.yaml --gpus 1 sft.epochs=2` and `run ... --restart output_dir=...` were rejected
    toy = str(ROOT / "recipes" / "toy.yaml")
    assert main(["plan", toy, "--gpus", "1", "sft.epochs=2", "--json", "sft.per_device_train_batch_size=8"]) == 0
    work = json.loads(capsys.readouterr().out)["stages"][0]["work"]
    assert (work["epochs"], work["sequences_per_step"]) == (2, 8)
    # an override after --restart reaches the recipe: the recipe's own check answers, not argparse's usage error
    assert main(["run", "--restart", f"output_dir={tmp_path / 'o'}", "data.grpo_path=MISSING"]) == 2
    _one_line_error(capsys, "data.grpo_path is read only with data.source=files")
    assert main(["run", "--restart", toy, f"output_dir={tmp_path / 'o'}", "data.grpo_path=MISSING"]) == 2
    _one_line_error(capsys, "data.grpo_path is read only with data.source=files")
    with pytest.raises(SystemExit) as e:  # an unknown option is still argparse's usage error
        main(["plan", toy, "--gpus", "1", "--bogus", "sft.epochs=2"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_positional_words_are_one_list_wherever_they_stand():
    from argparse import Namespace

    from mathrecipe.cli import merge_positionals

    args = Namespace(recipe=None, overrides=[])
    assert merge_positionals(args, ["r.yaml", "sft.epochs=2", "--x"]) == ["--x"]
    assert (args.recipe, args.overrides) == ("r.yaml", ["sft.epochs=2"])
    args = Namespace(recipe="r.yaml", overrides=["a=1"])
    merge_positionals(args, ["b=2"])
    assert (args.recipe, args.overrides) == ("r.yaml", ["a=1", "b=2"])
    args = Namespace(recipe=None, overrides=[])
    merge_positionals(args, ["output_dir=x"])
    assert (args.recipe, args.overrides) == (None, ["output_dir=x"])
    assert merge_positionals(Namespace(model="m"), ["stray"]) == ["stray"]  # eval has no overrides: still an error


def test_an_empty_recipe_file_is_refused(tmp_path, capsys):
    # 22.7: an empty file silently became the toy recipe
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["plan", str(empty)]) == 2
    _one_line_error(capsys, str(empty), "the recipe file is empty")
    assert main(["run", str(empty), f"output_dir={tmp_path / 'o'}"]) == 2
    _one_line_error(capsys, "the recipe file is empty")
    assert not (tmp_path / "o").exists()


def _files_run(tmp_path, sft_file, *extra):
    bench = tmp_path / "test.jsonl"
    bench.write_text(json.dumps({"problem": "Compute 1 + 1.", "answer": "2"}) + "\n")
    return main(["-q", "sft", f"output_dir={tmp_path / 'run'}", "data.source=files", f"data.sft_path={sft_file}",
                 f"data.test_path={bench}", "grpo.enabled=false", *extra])


def test_sft_data_that_is_not_utf8_or_empty_is_one_line(tmp_path, capsys, tiny_model_dir):
    # 22.5: a UnicodeDecodeError traceback, and datasets' bare StopIteration on an empty file
    model = f"model.name_or_path={tiny_model_dir}"
    bad = tmp_path / "sft.jsonl"
    bad.write_bytes(json.dumps({"prompt": "Compute 1 + 1.", "completion": "\\boxed{2}"}).encode() + b"\n"
                    + '{"prompt": "Calculez 1 + 1 façon", "completion": "2"}\n'.encode("cp1252"))
    assert _files_run(tmp_path, bad, model) == 2
    _one_line_error(capsys, "sft.jsonl, line 2: not UTF-8", "byte 0xe7")
    bad.write_text("\n\n")
    assert _files_run(tmp_path, bad, model) == 2
    _one_line_error(capsys, "data.sft_path", "is empty (no rows)")
    js = tmp_path / "sft.json"
    js.write_bytes(b'[{"prompt": "x", "completion": "\xff"}]')
    assert _files_run(tmp_path, js, model) == 2
    _one_line_error(capsys, "sft.json, line 1: not UTF-8", "byte 0xff")
    assert not (tmp_path / "run" / "sft").exists()


def test_a_checkpoint_write_cut_short_by_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    # 22.5: disk full in sft. torch.save reports a short write as a RuntimeError, not an OSError
    import torch

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    assert main(["-q", "sft", f"output_dir={tmp_path / 'run'}", *TINY, "sft.epochs=1", "sft.eval_each_epoch=false",
                 "grpo.enabled=false"]) == 2
    _one_line_error(capsys, "saving with torch failed", "unexpected pos", "disk is full", "rerun the same command")
