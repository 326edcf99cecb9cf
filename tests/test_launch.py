"""Launch configs: the shipped files are valid, and every kind of mistake is one line naming the key and the fix."""

import json
from pathlib import Path

import pytest

from mathrecipe.launch import (
    load_accelerate_config,
    load_deepspeed_config,
    load_fsdp_config,
    stage_launch,
    validate_launch,
)
from mathrecipe.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]
ACC = ROOT / "recipes" / "accelerate"
PAPER = ROOT / "recipes" / "paper" / "fast-math-r1-14b.yaml"
# what the paper recipe points at (the paper-recipe owner adds these keys)
PAPER_LAUNCH = [f"accelerate_config={ACC / 'multi_gpu.yaml'}", f"sft.deepspeed={ACC / 'deepspeed_zero3.json'}",
                f"grpo.deepspeed={ACC / 'deepspeed_zero2.json'}"]


@pytest.fixture(autouse=True)
def _no_launch_env(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def _json(tmp_path, obj, name="ds.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return str(p)


def _err(fn, *args):
    with pytest.raises(RecipeError) as e:
        fn(*args)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_shipped_configs_parse_with_their_stage():
    assert load_deepspeed_config(str(ACC / "deepspeed_zero3.json"), "sft.deepspeed")["zero_optimization"]["stage"] == 3
    assert load_deepspeed_config(str(ACC / "deepspeed_zero2.json"), "grpo.deepspeed")["zero_optimization"]["stage"] == 2
    assert load_fsdp_config(str(ACC / "fsdp2.json"), "sft.fsdp")["version"] == 2
    acc = load_accelerate_config(str(ACC / "multi_gpu.yaml"))
    assert acc["num_processes"] == 8 and acc["distributed_type"] == "MULTI_GPU" and acc["mixed_precision"] == "no"


def test_paper_recipe_with_the_shipped_launch_files_is_consistent():
    r = load_recipe(PAPER, PAPER_LAUNCH)
    validate_launch(r)
    assert stage_launch(r, "sft").shards == "weights"
    assert stage_launch(r, "grpo").shards == "gradients"
    fsdp = load_recipe(PAPER, [f"sft.fsdp={ACC / 'fsdp2.json'}"])
    assert stage_launch(fsdp, "sft").shards == "weights"


def test_missing_and_unparsable_files(tmp_path):
    msg = _err(validate_launch, load_recipe(None, [f"sft.deepspeed={tmp_path / 'nope.json'}"]))
    assert "sft.deepspeed=" in msg and "file not found" in msg
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {"stage": 3,}')
    msg = _err(validate_launch, load_recipe(None, [f"grpo.deepspeed={bad}"]))
    assert "grpo.deepspeed=" in msg and "not valid JSON" in msg


@pytest.mark.parametrize("cfg, expect", [
    ({"zero_optimisation": {"stage": 3}}, "unknown DeepSpeed key 'zero_optimisation' (did you mean 'zero_optimization'?)"),
    ({"zero_optimization": {"stage": 3, "stage3_max_live_params": 1}}, "did you mean 'stage3_max_live_parameters'"),
    ({"zero_optimization": {"stage": 2, "offload_optimizer": {"devices": "cpu"}}}, "zero_optimization.offload_optimizer key 'devices'"),
    ({"zero_optimization": {"stage": 4}}, "stage must be 0, 1, 2 or 3"),
    ({"bf16": {"enable": True}}, "unknown bf16 key 'enable'"),
])
def test_unknown_deepspeed_keys_are_named(tmp_path, cfg, expect):
    msg = _err(validate_launch, load_recipe(None, [f"sft.deepspeed={_json(tmp_path, cfg)}"]))
    assert expect in msg and "sft.deepspeed=" in msg


def test_deepspeed_batch_numbers_must_match_the_recipe(tmp_path):
    ds = _json(tmp_path, {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2}})
    msg = _err(validate_launch, load_recipe(None, [f"sft.deepspeed={ds}", "sft.per_device_train_batch_size=16"]))
    assert "train_micro_batch_size_per_gpu=4 but sft.per_device_train_batch_size=16" in msg and '"auto"' in msg
    ds = _json(tmp_path, {"gradient_accumulation_steps": 2})
    msg = _err(validate_launch, load_recipe(None, [f"grpo.deepspeed={ds}"]))
    assert "gradient_accumulation_steps=2 but grpo.gradient_accumulation_steps=1" in msg
    # explicit global batch: 16 x 1 x 8 processes = 128, not 64
    ds = _json(tmp_path, {"train_batch_size": 64})
    acc = ACC / "multi_gpu.yaml"
    msg = _err(validate_launch, load_recipe(None, [f"sft.deepspeed={ds}", f"accelerate_config={acc}"]))
    assert "train_batch_size=64" in msg and "8 processes = 128" in msg
    validate_launch(load_recipe(None, [f"sft.deepspeed={_json(tmp_path, {'train_batch_size': 128})}",
                                       f"accelerate_config={acc}"]))
    # no process count known: the global batch must at least be a multiple of batch x accumulation
    msg = _err(validate_launch, load_recipe(None, [f"sft.deepspeed={_json(tmp_path, {'train_batch_size': 24})}"]))
    assert "not a multiple of sft.per_device_train_batch_size x sft.gradient_accumulation_steps = 16" in msg


def test_deepspeed_precision_clipping_and_optimizer_blocks(tmp_path):
    msg = _err(validate_launch, load_recipe(None, [f"sft.deepspeed={_json(tmp_path, {'bf16': {'enabled': True}})}",
                                                   "sft.precision=fp32"]))
    assert "bf16.enabled=true contradicts sft.precision=fp32" in msg
    msg = _err(validate_launch, load_recipe(None, [f"sft.deepspeed={_json(tmp_path, {'gradient_clipping': 0.5})}"]))
    assert "gradient_clipping=0.5" in msg and "max_grad_norm=1.0" in msg
    validate_launch(load_recipe(None, [f"sft.deepspeed={_json(tmp_path, {'gradient_clipping': 0.5})}",
                                       "sft.extra={max_grad_norm: 0.5}"]))
    opt = {"optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}
    msg = _err(validate_launch, load_recipe(None, [f"sft.deepspeed={_json(tmp_path, opt)}"]))
    assert "'optimizer' block would replace sft.optim" in msg


def test_deepspeed_and_fsdp_together_is_an_error():
    r = load_recipe(None, [f"sft.deepspeed={ACC / 'deepspeed_zero3.json'}", f"sft.fsdp={ACC / 'fsdp2.json'}"])
    assert "sft.deepspeed and sft.fsdp are both set" in _err(validate_launch, r)


def test_unknown_fsdp_key(tmp_path):
    p = _json(tmp_path, {"fsdp_version": 2, "reshard_after_forwards": True}, "fsdp.json")
    msg = _err(validate_launch, load_recipe(None, [f"grpo.fsdp={p}"]))
    assert "unknown FSDP key 'reshard_after_forwards' (did you mean 'reshard_after_forward'?)" in msg


def _yaml(tmp_path, text):
    p = tmp_path / "acc.yaml"
    p.write_text(text)
    return str(p)


def test_accelerate_config_keys_and_values(tmp_path):
    base = (ACC / "multi_gpu.yaml").read_text()
    msg = _err(validate_launch, load_recipe(None, [f"accelerate_config={_yaml(tmp_path, base.replace('num_processes', 'num_process'))}"]))
    assert "unknown accelerate config key 'num_process' (did you mean 'num_processes'?)" in msg
    nested = base + "deepspeed_config:\n  zero_stag: 3\n"
    msg = _err(validate_launch, load_recipe(None, [f"accelerate_config={_yaml(tmp_path, nested)}"]))
    assert "unknown deepspeed_config key 'zero_stag' (did you mean 'zero_stage'?)" in msg
    bad_type = base.replace("distributed_type: MULTI_GPU", "distributed_type: MULTI-GPU")
    msg = _err(validate_launch, load_recipe(None, [f"accelerate_config={_yaml(tmp_path, bad_type)}"]))
    assert "accelerate cannot read it" in msg and "MULTI-GPU" in msg
    msg = _err(validate_launch, load_recipe(None, [f"accelerate_config={_yaml(tmp_path, base.replace('num_processes: 8', 'num_processes: 0'))}"]))
    assert "num_processes must be a whole number >= 1" in msg


def test_accelerate_config_conflicts_with_the_recipe(tmp_path):
    base = (ACC / "multi_gpu.yaml").read_text()
    bf16 = _yaml(tmp_path, base.replace("mixed_precision: 'no'", "mixed_precision: bf16"))
    msg = _err(validate_launch, load_recipe(None, [f"accelerate_config={bf16}", "sft.precision=fp32"]))
    assert "mixed_precision=bf16 would turn on bf16 autocast although sft.precision=fp32" in msg
    ds = _yaml(tmp_path, base.replace("distributed_type: MULTI_GPU", "distributed_type: DEEPSPEED"))
    msg = _err(validate_launch, load_recipe(None, [f"accelerate_config={ds}", f"sft.deepspeed={ACC / 'deepspeed_zero3.json'}"]))
    assert "distributed_type=DEEPSPEED and sft.deepspeed is set too" in msg and "multi_gpu.yaml" in msg


def test_world_size_must_match_the_accelerate_config(monkeypatch):
    r = load_recipe(PAPER, PAPER_LAUNCH)
    monkeypatch.setenv("WORLD_SIZE", "4")
    msg = _err(validate_launch, r)
    assert "num_processes=8 but this run has WORLD_SIZE=4" in msg
    monkeypatch.setenv("WORLD_SIZE", "8")
    validate_launch(r)


def test_grpo_generation_batch_divisible_by_num_generations(monkeypatch):
    r = load_recipe(None, ["grpo.extra={generation_batch_size: 12}", "grpo.per_device_train_batch_size=8"])
    validate_launch(r)  # no process count known: TRL's check waits for the launch
    monkeypatch.setenv("WORLD_SIZE", "2")
    msg = _err(validate_launch, r)
    assert "grpo.num_generations=8 does not divide the global generation batch 12" in msg
    ok = load_recipe(None, ["grpo.extra={generation_batch_size: 24}", "grpo.per_device_train_batch_size=8"])
    msg = _err(validate_launch, ok)  # 24 is divisible by 8 but not by 8 x 2 processes
    assert "generation_batch_size=24 is not a multiple of grpo.per_device_train_batch_size x 2 processes = 16" in msg
    validate_launch(load_recipe(None, ["grpo.extra={generation_batch_size: 32}", "grpo.per_device_train_batch_size=8"]))
