from pathlib import Path

import pytest
import yaml

from mathrecipe.recipe import Recipe, RecipeError, load_recipe, parse_override

ROOT = Path(__file__).resolve().parents[1]


def test_toy_yaml_equals_the_builtin_defaults():
    """`mathrecipe run` with no recipe runs exactly recipes/toy.yaml."""
    assert load_recipe(ROOT / "recipes" / "toy.yaml").to_dict() == Recipe().to_dict()


def test_every_shipped_recipe_validates():
    for p in sorted((ROOT / "recipes").rglob("*.yaml")):
        if "accelerate" in p.parts:
            continue
        load_recipe(p)


def test_overrides_are_typed():
    r = load_recipe(None, ["sft.epochs=3", "grpo.learning_rate=1e-5", "eval.stop_at_think=true", "grpo.min_p=null"])
    assert r.sft.epochs == 3 and r.grpo.learning_rate == 1e-5 and r.eval.stop_at_think is True
    assert r.grpo.min_p is None
    assert parse_override("output_dir=runs/x") == ("output_dir", "runs/x")


def test_unknown_key_names_key_and_suggests_fix(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown recipe key 'sft.epoch'.*did you mean 'sft.epochs'"):
        load_recipe(None, ["sft.epoch=3"])
    p = tmp_path / "r.yaml"
    p.write_text("grpo:\n  num_generation: 8\n")
    with pytest.raises(RecipeError, match="grpo.num_generation"):
        load_recipe(p)


def test_wrong_type_names_key():
    with pytest.raises(RecipeError, match="sft.epochs: expected an integer"):
        load_recipe(None, ["sft.epochs=ten"])
    with pytest.raises(RecipeError, match="sft.select: must be one of 'last', 'best'"):
        load_recipe(None, ["sft.select=middle"])


def test_cosine_max_len_in_tokens_beyond_completion_length():
    with pytest.raises(RecipeError, match=r"rewards.cosine.max_len=400 tokens exceeds grpo.max_completion_length=160"):
        load_recipe(None, ["rewards.cosine.max_len=400"])
    # counted in characters, it is the paper's setting and allowed
    load_recipe(None, ["rewards.cosine.max_len=400", "rewards.cosine.unit=chars"])


def test_group_size_must_divide_the_batch():
    with pytest.raises(RecipeError, match="grpo.num_generations=6 does not divide"):
        load_recipe(None, ["grpo.num_generations=6"])


def test_missing_recipe_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft: [1, 2\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="key=value"):
        parse_override("sft.epochs")


def test_files_source_needs_paths():
    with pytest.raises(RecipeError, match="data.sft_path"):
        load_recipe(None, ["data.source=files", "model.name_or_path=some/model", "data.test_path=x.jsonl"])


# ------------------------------------------------------------------------------------ every key documented

@pytest.mark.parametrize("section", ["(top level)", "model", "data", "sft", "grpo", "rewards", "eval", "health"])
def test_every_recipe_field_is_documented_where_it_is_declared(section):
    """Issue 19.8: each field carries its meaning (``field(metadata={"help": ...})``, TRL's way), and each section
    class a docstring of its own (not the one dataclasses writes: ``Name(field: type = ...)``)."""
    import dataclasses
    import typing

    from mathrecipe.inspection import _section_class, recipe_keys

    rows = [r for r in recipe_keys() if (r["key"].split(".")[0] if section != "(top level)" else r["section"])
            == section and (section != "(top level)" or "." not in r["key"])]
    assert rows
    assert [r["key"] for r in rows if len(r["meaning"].strip()) < 10] == []

    def classes(cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            sub = _section_class(hints[f.name])
            if sub is not None:
                yield sub
                yield from classes(sub)

    if section == "rewards":  # a mapping by name: every registered reward's options class
        from mathrecipe.rewards import REWARDS

        tops = [spec.options for spec in REWARDS.values()]
        assert {r["key"] for r in rows} >= {f"rewards.{n}.weight" for n in REWARDS}
    elif section == "(top level)":
        tops = [Recipe]
    else:
        tops = [_section_class(typing.get_type_hints(Recipe)[section])]
    for cls in tops + ([] if section == "(top level)" else [c for top in tops for c in classes(top)]):
        assert cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("), cls.__name__


def test_inspect_keys_prints_section_key_type_default_and_meaning(capsys):
    """Issue 19.8: ``mathrecipe inspect --keys [PREFIX]`` answers what a key means without reading source."""
    import json

    from mathrecipe.cli import main

    assert main(["inspect", "--keys", "data.build.sources"]) == 0
    out = capsys.readouterr().out
    assert "[data.build.sources[].sample]" in out
    assert "data.build.sources[].sample.n_long  (int | null) = 3000" in out and "long problems drawn" in out
    assert "eval." not in out  # only the keys under the prefix
    assert main(["inspect", "--keys", "eval.top_p", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row == {"section": "eval", "key": "eval.top_p", "type": "float", "default": "1.0",
                   "meaning": row["meaning"]} and row["meaning"].startswith("nucleus sampling")
    assert main(["inspect", "--keys"]) == 0
    keys = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert {"output_dir", "sft.epochs", "rewards.cosine.min_value_wrong", "health.window"} <= set(keys)
    assert main(["inspect", "--keys", "sft.epoch"]) == 2
    assert "--keys sft.epoch: no recipe key" in capsys.readouterr().err


# --------------------------------------------------------------------------------- one name per concept (19.9)
OLD_KEYS = {  # written out, not read from RENAMED_KEYS: this is what recipes of the previous release spelled
    "sft.batch_size": "sft.per_device_train_batch_size",
    "grpo.batch_size": "grpo.per_device_train_batch_size",
    "eval.batch_size": "eval.generate_batch_size",
    "data.build.batch_size": "data.build.map_batch_size",
    "data.eval_path": "data.test_path",
    "data.toy.n_rl": "data.toy.n_grpo",
}


@pytest.mark.parametrize("old,new", sorted(OLD_KEYS.items()))
def test_a_renamed_key_is_one_line_naming_the_new_key(old, new, tmp_path, capsys):
    """In a recipe file and as an override, the old spelling is refused in one line (exit 2) that names the new
    key; the new key holds the same setting (its value reaches the recipe)."""
    from mathrecipe.cli import main

    tree: dict = {}
    node = tree
    *parents, leaf = old.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    value = "x.jsonl" if new == "data.test_path" else 8
    node[leaf] = value
    recipe = tmp_path / "old.yaml"
    recipe.write_text(yaml.safe_dump(tree))
    for argv in (["plan", str(recipe)], ["plan", str(ROOT / "recipes" / "toy.yaml"), f"{old}={value}"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mathrecipe: error:") and f"'{new}'" in err[0], err
    files = ["data.source=files", "model.name_or_path=m", "sft.enabled=false", "grpo.enabled=false"]
    node = load_recipe(None, [f"{new}={value}"] + (files if new == "data.test_path" else []))
    for part in new.split("."):
        node = getattr(node, part)
    assert node == value


def test_a_run_recorded_under_the_old_names_resumes(tmp_path):
    """A run folder whose recipe.yaml was written before the renames holds the same settings under the old names:
    resuming it is not refused as 'made with other settings'."""
    from mathrecipe.preflight import check_output_dir

    recipe = load_recipe(None, [f"output_dir={tmp_path}"])
    old = recipe.to_dict()
    for old_key, new_key in OLD_KEYS.items():
        *parents, new_leaf = new_key.split(".")
        node = old
        for p in parents:
            node = node[p]
        node[old_key.split(".")[-1]] = node.pop(new_leaf)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert check_output_dir(recipe, tmp_path) == recipe.to_dict()
    changed = load_recipe(None, [f"output_dir={tmp_path}", "sft.per_device_train_batch_size=3"])
    with pytest.raises(Exception, match="sft.per_device_train_batch_size"):  # a real change is still refused
        check_output_dir(changed, tmp_path)
