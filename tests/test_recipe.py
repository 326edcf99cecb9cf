from pathlib import Path

import pytest

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
        load_recipe(None, ["data.source=files", "model.name_or_path=some/model", "data.eval_path=x.jsonl"])
