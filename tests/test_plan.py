"""mathrecipe plan: model shapes, the memory formulas at their end points, verdicts and fixes, steps and tokens."""

import argparse
import json
import math
from pathlib import Path

import pytest

from mathrecipe.launch import StageLaunch
from mathrecipe.memory import GIB, activation_bytes, auto_eval_batch_size, eval_batch_bytes, train_state_bytes
from mathrecipe.plan import (
    BUILTIN_SHAPES,
    CUDA_CONTEXT_GIB,
    Target,
    add_plan_parser,
    check_fits,
    plan_recipe,
    render,
    resolve_shape,
    shape_from_config,
)
from mathrecipe.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]
ACC = ROOT / "recipes" / "accelerate"
PAPER = ROOT / "recipes" / "paper" / "fast-math-r1-14b.yaml"
PAPER_LAUNCH = [f"accelerate_config={ACC / 'multi_gpu.yaml'}", f"sft.deepspeed={ACC / 'deepspeed_zero3.json'}",
                f"grpo.deepspeed={ACC / 'deepspeed_zero2.json'}"]
# The values the paper recipe must carry to fit 8 x H200 (requested from its owner; see the report).
PAPER_FIT = ["grpo.extra.vllm_enable_sleep_mode=true", "eval.generate_batch_size=auto"]
H200 = dict(gpus=8, gpu_mem_gib=141)
# the GPU probe's SFT setting: a Qwen2.5-1.5B shape, one packed 8,192-token row, bf16
PROBE = ["model.name_or_path=Qwen/Qwen2.5-1.5B", "data.source=files", "data.sft_path=x", "data.grpo_path=x",
         "data.test_path=x", "sft.per_device_train_batch_size=1", "sft.max_length=8192", "sft.packing=true", "sft.precision=bf16"]


@pytest.fixture(autouse=True)
def _no_launch_env(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def run_plan(argv):
    parser = argparse.ArgumentParser()
    add_plan_parser(parser.add_subparsers())
    args = parser.parse_args(["plan", *argv])
    return args.func(args)


@pytest.mark.parametrize("name, billions", [
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 1.777), ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 7.616),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 14.770), ("Qwen/Qwen3-14B", 14.768),
    ("nvidia/OpenMath-Nemotron-14B", 14.770), ("Qwen/Qwen2.5-1.5B", 1.544),
])
def test_builtin_shapes_have_the_published_parameter_counts(name, billions):
    assert BUILTIN_SHAPES[name].params / 1e9 == pytest.approx(billions, rel=0.003)


def test_kv_cache_per_token_of_the_14b():
    # 2 (K and V) x 48 layers x 8 kv heads x 128 x 2 bytes = 192 KiB
    assert BUILTIN_SHAPES["deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"].kv_bytes_per_token(2) == 192 * 1024


@pytest.mark.parametrize("kind", ["llama_tied", "qwen2", "qwen3"])
def test_parameter_formula_matches_a_real_model(kind, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, vocab_size=300)
    cfg = {"llama_tied": lambda: LlamaConfig(**common, tie_word_embeddings=True),
           "qwen2": lambda: Qwen2Config(**common, tie_word_embeddings=False),
           "qwen3": lambda: Qwen3Config(**common, head_dim=32, tie_word_embeddings=False)}[kind]()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    real = sum(p.numel() for p in model.parameters())
    model.config.save_pretrained(tmp_path)
    shape = resolve_shape(load_recipe(None, [f"model.name_or_path={tmp_path}", "data.source=files",
                                             "data.sft_path=x", "data.grpo_path=x", "data.test_path=x"]))
    assert shape.params == real


def test_parameters_are_counted_exactly_where_a_config_is_at_hand(tmp_path):
    """19.5: a config at hand is built on the meta device and counted, so a layout the shape formula does not know
    (Llama with attention and MLP biases: o_proj and MLP biases) still gets the model's own parameter count."""
    import dataclasses

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=96, vocab_size=300, attention_bias=True, mlp_bias=True)
    torch.manual_seed(0)
    real = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    cfg.save_pretrained(tmp_path)
    shape = resolve_shape(load_recipe(None, [f"model.name_or_path={tmp_path}", "data.source=files",
                                             "data.sft_path=x", "data.grpo_path=x", "data.test_path=x"]))
    assert shape.params == real
    assert dataclasses.replace(shape, counted_params=None).params != real  # the formula alone is off here


def test_a_fix_is_set_as_an_override_would_be(monkeypatch):
    """19.5: the fix search sets a candidate through the recipe's own override path (set, build, validate), so a
    setting the recipe itself would refuse is never offered: ZeRO-3 fits this SFT on 4 x 16 GiB, but with
    sft.save_only_model=true DeepSpeed could not resume (recipe.validate refuses the pair)."""
    probe = ["model.name_or_path=Qwen/Qwen2.5-1.5B", "data.source=files", "data.sft_path=x", "data.grpo_path=x",
             "data.test_path=x", "sft.per_device_train_batch_size=1", "sft.max_length=2048", "sft.precision=bf16",
             "grpo.enabled=false", "sft.gradient_checkpointing=true", "sft.optim=paged_adamw_8bit"]
    zero3 = "sft.deepspeed=recipes/accelerate/deepspeed_zero3.json"
    monkeypatch.chdir(ROOT)  # the ZeRO-3 candidate is the repository's file
    fixes = check_fits(load_recipe(None, probe), gpus=4, gpu_mem_gib=16).stage("sft").fixes
    assert len(fixes) == 1 and fixes[0].startswith(zero3)
    refused = check_fits(load_recipe(None, [*probe, "sft.save_only_model=true"]), gpus=4, gpu_mem_gib=16)
    assert refused.stage("sft").fits is False and not any(zero3 in f for f in refused.stage("sft").fixes)


def test_toy_shape_matches_the_toy_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    shape = shape_from_config(json.loads((Path(tiny_model_dir) / "config.json").read_text()), "tiny")
    assert shape.params == sum(p.numel() for p in model.parameters())
    toy = resolve_shape(load_recipe(None))
    assert toy.layers == 4 and toy.hidden == 128 and toy.tied


def test_unknown_model_and_moe_are_one_line_errors(tmp_path):
    with pytest.raises(RecipeError, match="no config.json there and not a built-in shape") as e:
        resolve_shape(load_recipe(None, ["model.name_or_path=nobody/none-7B", "data.source=files",
                                         "data.sft_path=x", "data.grpo_path=x", "data.test_path=x"]))
    assert "\n" not in str(e.value)
    with pytest.raises(RecipeError, match="mixture-of-experts"):
        shape_from_config({"hidden_size": 8, "num_local_experts": 8}, "moe")


def test_training_state_bytes_per_parameter():
    p = 1_000_000
    zero3 = StageLaunch(zero_stage=3, fsdp=None, deepspeed={})
    zero2 = StageLaunch(zero_stage=2, fsdp=None, deepspeed={})
    ddp = StageLaunch(zero_stage=None, fsdp=None, deepspeed=None)
    # Adam: 16 bytes/param in all, sharded over 8 under ZeRO-3; 8-bit Adam: 10
    assert sum(train_state_bytes(p, zero3, 8, True, "adamw_torch").values()) == 16 * p / 8
    assert sum(train_state_bytes(p, zero3, 8, True, "paged_adamw_8bit").values()) == 10 * p / 8
    # ZeRO-2 keeps the bf16 weights whole, shards gradients, master weights and moments
    z2 = train_state_bytes(p, zero2, 8, True, "adamw_torch")
    assert z2["weights"] == 2 * p and z2["gradients"] == 2 * p / 8 and z2["optimizer moments"] == 8 * p / 8
    # without DeepSpeed the fp32 weights are the master weights: 4 + 4 + 8, nothing sharded
    assert train_state_bytes(p, ddp, 8, True, "adamw_torch") == {"weights": 4 * p, "gradients": 4 * p,
                                                                 "optimizer moments": 8 * p}


def test_activation_model_against_the_h200_reference():
    """Qwen2.5-1.5B shape, one packed 8,192-token row, bf16 autocast on one H200: 27 GiB with gradient
    checkpointing, 54 GiB without (reported in bench/results/gpu.md)."""
    target = Target(gpus=1, gpu_mem_gib=141, gpu=True)
    on = plan_recipe(load_recipe(None, PROBE), target).stage("sft").total_gib
    off = plan_recipe(load_recipe(None, [*PROBE, "sft.gradient_checkpointing=false"]), target).stage("sft").total_gib
    # the measurement is the allocator's peak: without the CUDA context
    assert on - CUDA_CONTEXT_GIB == pytest.approx(27, rel=0.10)
    assert off - CUDA_CONTEXT_GIB == pytest.approx(54, rel=0.10)
    shape = BUILTIN_SHAPES["Qwen/Qwen2.5-1.5B"]
    gc = activation_bytes(shape, 1, 8192, 2, True)
    assert gc["activations (layer inputs)"] == 8192 * 28 * 1536 * 2


def test_paper_sft_fits_on_8_h200_with_zero3():
    plan = check_fits(load_recipe(PAPER, PAPER_LAUNCH), **H200)
    sft = plan.stage("sft")
    assert sft.fits and sft.total_gib < 60
    assert "ZeRO-3 over 8" in sft.setup and "24000-token packed rows" in sft.setup
    assert sft.work["tokens_per_step_max"] == 1 * 8 * 8 * 24000
    import re

    note = next(n for n in sft.notes if n.startswith("activations"))
    on, off = (float(x) for x in re.findall(r"([\d.]+) GiB", note))
    assert 0 < on < off  # both figures shown: checkpointing keeps one layer's activations, not 48


def test_shipped_paper_recipe_fits_8_h200_and_exits_0():
    """`mathrecipe plan recipes/paper/fast-math-r1-14b.yaml --gpus 8 --gpu-mem 141` exits 0 as shipped, and with the
    HF backend evaluating, `eval.generate_batch_size: auto` picks a batch that fits."""
    assert run_plan([str(PAPER), "--gpus", "8", "--gpu-mem", "141"]) == 0
    assert check_fits(load_recipe(PAPER), **H200).failures() == []
    plan = check_fits(load_recipe(PAPER, PAPER_LAUNCH + PAPER_FIT + ["eval.backend=hf"]), **H200)
    assert plan.failures() == []
    assert 1 <= plan.stage("eval").work["auto_batch_size"] <= 64


def test_paper_grpo_without_sleep_mode_and_eval_batch_64_do_not_fit():
    plan = check_fits(load_recipe(PAPER, [*PAPER_LAUNCH, "grpo.extra.optim=paged_adamw_8bit",
                                          "grpo.extra.vllm_enable_sleep_mode=false", "eval.backend=hf",
                                          "eval.generate_batch_size=64"]), **H200)
    failures = plan.failures()
    grpo = next(f for f in failures if f.startswith("grpo:"))
    assert "grpo.extra.vllm_enable_sleep_mode=true" in grpo and "GiB over" in grpo
    ev = next(f for f in failures if f.startswith("eval:"))
    # 64 sequences x 33,280 tokens x 192 KiB = 390 GiB of KV cache; auto picks what fits
    assert "eval.generate_batch_size=auto" in ev and "batch 17" in ev


def test_one_24gib_gpu_cannot_fit_the_14b(capsys):
    rc = run_plan([str(PAPER), *PAPER_LAUNCH, *PAPER_FIT, "--gpus", "1", "--gpu-mem", "24"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "does not fit: sft: needs" in out and "over the 22.8 GiB usable on a 24 GiB GPU" in out
    assert "launches 8 processes; this plan is for 1" in out


def test_gradient_checkpointing_is_the_fix_when_it_is_enough():
    r = load_recipe(None, [*PROBE, "sft.gradient_checkpointing=false", "grpo.enabled=false"])
    plan = check_fits(r, gpus=1, gpu_mem_gib=40)
    (line,) = [f for f in plan.failures() if f.startswith("sft")]
    assert line.startswith("sft: needs") and "fix: sft.gradient_checkpointing=true" in line


def test_eval_auto_batch_is_the_largest_that_fits_the_kv_budget():
    shape = BUILTIN_SHAPES["deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"]
    per = eval_batch_bytes(shape, 512 + 32768)
    assert auto_eval_batch_size(shape, 512 + 32768, 10 * per / GIB) == 10
    assert auto_eval_batch_size(shape, 512 + 32768, 10.99 * per / GIB) == 10
    r = load_recipe(PAPER, [*PAPER_LAUNCH, "eval.backend=hf", "eval.generate_batch_size=auto", "eval.kv_cache_gib=60"])
    ev = check_fits(r, **H200).stage("eval")
    assert ev.work["auto_batch_size"] == math.floor(60 * GIB / per) == 9
    assert "batch 9" in ev.setup


def test_vllm_share_too_small_for_one_sequence_names_the_utilization():
    r = load_recipe(PAPER, [*PAPER_LAUNCH, *PAPER_FIT, "grpo.vllm_gpu_memory_utilization=0.2",
                            "grpo.extra.vllm_tensor_parallel_size=1"])
    grpo = check_fits(r, **H200).stage("grpo")
    assert grpo.fits is False
    assert "raise grpo.vllm_gpu_memory_utilization to >= 0.25" in grpo.problems[0]


def test_cpu_plan_has_estimates_and_work_but_no_verdict():
    r = load_recipe(None)
    plan = check_fits(r)  # this machine: no GPU
    assert [s.stage for s in plan.stages] == ["sft", "grpo", "eval"]
    assert all(s.fits is None for s in plan.stages) and plan.failures() == []
    sft = plan.stage("sft")
    per_epoch = math.ceil(r.data.toy.n_sft / r.sft.per_device_train_batch_size)
    assert sft.work["steps_per_epoch"] == per_epoch and sft.work["optimizer_steps"] == per_epoch * r.sft.epochs
    assert "fp32" in sft.setup and "no checkpointing" in sft.setup  # CPU defaults
    grpo = plan.stage("grpo").work
    assert grpo["completions_per_step"] == 64 and grpo["prompts_per_step"] == 8
    assert plan.stage("eval").work["generate_calls"] == math.ceil(r.data.toy.n_test * r.eval.samples / r.eval.generate_batch_size)
    assert "total per process" in render(plan)


def test_packed_steps_come_from_the_built_set(tmp_path):
    import datasets

    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             "trace_tokens": t} for t in (100, 200, 300, 50)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "sft"))
    r = load_recipe(None, ["data.source=files", f"data.sft_path={tmp_path / 'sft'}", "data.grpo_path=x",
                           "data.test_path=x", "model.name_or_path=Qwen/Qwen2.5-1.5B", "sft.max_length=256",
                           "sft.packing=true", "sft.per_device_train_batch_size=1", "sft.epochs=2"])
    work = check_fits(r, gpus=1).stage("sft").work
    # 100 + 200 + min(300, 256) + 50 = 606 tokens -> 3 packed rows of 256 -> 3 steps per epoch
    assert work["rows"] == 4 and work["steps_per_epoch"] == 3 and work["optimizer_steps"] == 6


def test_8bit_optimizer_without_bitsandbytes_is_noted(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    sft = check_fits(load_recipe(PAPER, PAPER_LAUNCH), **H200).stage("sft")
    assert "sft.optim=paged_adamw_8bit needs bitsandbytes (pip install bitsandbytes), not installed here" in sft.notes
    notes = check_fits(load_recipe(None), gpus=1).stage("sft").notes
    assert not [n for n in notes if "bitsandbytes" in n]  # adamw_torch needs nothing


def test_json_output_and_argument_errors(capsys):
    assert run_plan([str(PAPER), *PAPER_LAUNCH, *PAPER_FIT, "--gpus", "8", "--gpu-mem", "141", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["params"] == BUILTIN_SHAPES["deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"].params
    assert [s["stage"] for s in data["stages"]] == ["sft", "grpo", "eval"] and data["failures"] == []
    with pytest.raises(RecipeError, match="--gpus must be >= 1"):
        run_plan([str(PAPER), "--gpus", "0"])
    with pytest.raises(RecipeError, match="--gpu-mem must be > 0"):
        run_plan([str(PAPER), "--gpu-mem", "-1"])


def test_run_stops_before_training_on_a_stage_that_cannot_fit(tmp_path, monkeypatch, capsys):
    """`mathrecipe run` plans first: on one 24 GiB GPU a 4B-parameter toy cannot train, so the run stops at once
    with the stage, the shortfall and the fix (a GPU machine is simulated: the plan's target is the only change)."""
    import mathrecipe.plan as plan_mod
    from mathrecipe.cli import main

    real = plan_mod.detect_target
    monkeypatch.setattr(plan_mod, "detect_target", lambda r, g=None, m=None: real(r, 1, 24.0))
    out = tmp_path / "run"
    rc = main(["run", f"output_dir={out}", "model.toy.hidden_size=4096", "model.toy.num_layers=20",
               "model.toy.num_heads=32", "model.toy.intermediate_size=16384", "sft.precision=fp32"])
    assert rc == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("mathrecipe: error:")]
    assert len(err) == 1 and "sft: needs" in err[0] and "GiB over" in err[0] and "fix:" in err[0]
    assert not out.exists()  # nothing was built or trained
