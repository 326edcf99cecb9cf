"""``mathrecipe plan``: per-GPU memory, optimizer steps and tokens of every stage of a recipe -- without a GPU.

Symbols: P parameters, N processes (one per GPU), L layers, h hidden size, I intermediate size, H attention heads,
K key/value heads, d head dimension, V vocabulary, b sequences per micro-batch of s tokens (T = b*s), and a bytes per
activation value (2 for bf16/fp16, 4 for fp32). Sizes in GiB (2**30 bytes).

Training state, bytes per parameter (trainable weights are fp32 master weights, compute is bf16):

    layout                      weights  gradients  fp32 master  optimizer moments m
    DeepSpeed (bf16)              2         2           4        Adam 8, 8-bit Adam 2, Lion/SGD-momentum 4
    FSDP2, DDP, one GPU           4         4           -        (same)

  so Adam costs 16 bytes/param either way and 8-bit Adam 10: 14.8B x 16 B = 220 GiB, or 27.5 GiB per GPU sharded
  over 8. ZeRO-1 divides master + moments by N, ZeRO-2 also the gradients, ZeRO-3 and FSDP2 (full shard) all of it.
  On top: DDP keeps gradient buckets (+4 B/param when N > 1); bf16 autocast over fp32 weights keeps bf16 copies for
  backward (+2 B/param); ZeRO-3 holds up to stage3_max_live_parameters gathered bf16 weights; FSDP2 two gathered
  layers plus the LM head.

Activations of one micro-batch:
  - without gradient checkpointing, per token and layer: (a/2) * (34h + 8I + 8Kd) bytes -- Korthikanti et al. 2022's
    34h with flash/SDPA attention (no s^2 term), adapted to RMSNorm with fp32 internals, RoPE and SwiGLU's four
    I-wide tensors; eager attention adds (a/2) * 5 * H * s;
  - with gradient checkpointing: a * h per token and layer (each layer's input) plus one layer's full activations
    while it is recomputed;
  - the fused LM head of TRL 1.16 (no full logits): a 4096 x 32768 fp32 tile plus an fp32 V x h gradient
    accumulator.
  Checked against H200 measurements (Qwen2.5-1.5B shape, one packed 8,192-token row, bf16 autocast, sdpa; see
  bench/results/gpu.md): 28.9 GiB estimated vs 27 measured with checkpointing, 54.2 vs 54 without.

KV cache: 2 * L * K * d * a bytes per token (keys and values of every layer): 192 KiB per token for a 14B Qwen2.5
shape in bf16, 6.1 GiB for one 33k-token sequence.

Stages:
  - sft: training state + activations of b packed rows of s = sft.max_length tokens.
  - grpo: training state + the reference model (beta > 0: a * P, sharded under ZeRO-3) + activations of b
    sequences of (512-token prompt + max_completion_length) + the rollout: vLLM colocate holds
    vllm_gpu_memory_utilization x the card (its bf16 weights 2P / tensor-parallel, ~2 GiB runtime, the KV cache);
    without grpo.extra.vllm_enable_sleep_mode that share stays allocated through the train step, with it the peak is
    the larger of the rollout and train phases. hf/paged generate: the KV cache of the per-device generation batch
    (and, under ZeRO-3, all weights gathered), freed before the train step.
  - eval: bf16 weights + batch x (512 + max_new_tokens) tokens of KV cache + batch x V x 8 bytes (last-position fp32
    logits and probabilities); ``eval.batch_size: auto`` is the largest batch whose KV fits eval.kv_cache_gib or,
    unset, the card less the weights and reserve. vLLM: its 0.9 share must hold the weights and one sequence.

A stage fits when its total (with 1 GiB of CUDA context and communication buffers) is within 95% of the card (the
rest is allocator fragmentation). Estimates are upper bounds by design: prompts are taken at 512 tokens, completions
at their maximum length.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mathrecipe.evaluate.generation import BACKENDS
from mathrecipe.hardware import resolve_precision
from mathrecipe.launch import StageLaunch, grpo_generation_batch, stage_launch, validate_launch
from mathrecipe.memory import (
    ENGINE_RUNTIME_GIB,
    GIB,
    PROMPT_TOKENS,
    ModelShape,
    activation_bytes,
    auto_eval_batch_size,
    engine_kv_room_gib,
    eval_batch_bytes,
    moment_bytes,
    sequence_bytes,
    state_extra_bytes,
    train_state_bytes,
)
from mathrecipe.recipe import Recipe, RecipeError

CUDA_CONTEXT_GIB = 1.0  # CUDA context, cuBLAS workspace, NCCL buffers
HEADROOM = 0.05  # share of the card left to allocator fragmentation


# ------------------------------------------------------------------------------------------------ model shapes


def _qwen25(name: str, layers: int, hidden: int, heads: int, kv: int, inter: int, vocab: int, tied: bool,
            max_pos: int = 131072) -> ModelShape:
    return ModelShape(name, layers, hidden, heads, kv, hidden // heads, inter, vocab, tied, attention_bias=True,
                      max_positions=max_pos)


# The paper's models, from their config.json (no download needed). OpenMath-Nemotron-14B and Fast-Math-R1-14B have
# the Qwen2.5-14B shape of DeepSeek-R1-Distill-Qwen-14B.
BUILTIN_SHAPES: dict[str, ModelShape] = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": _qwen25("DeepSeek-R1-Distill-Qwen-1.5B", 28, 1536, 12, 2, 8960,
                                                         151936, False),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": _qwen25("DeepSeek-R1-Distill-Qwen-7B", 28, 3584, 28, 4, 18944,
                                                       152064, False),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": _qwen25("DeepSeek-R1-Distill-Qwen-14B", 48, 5120, 40, 8, 13824,
                                                        152064, False),
    "nvidia/OpenMath-Nemotron-14B": _qwen25("OpenMath-Nemotron-14B", 48, 5120, 40, 8, 13824, 152064, False),
    "RabotniKuma/Fast-Math-R1-14B": _qwen25("Fast-Math-R1-14B", 48, 5120, 40, 8, 13824, 152064, False),
    "Qwen/Qwen3-14B": ModelShape("Qwen3-14B", 40, 5120, 40, 8, 128, 17408, 151936, False, qk_norm=True,
                                 max_positions=40960),
    # the GPU probe's shape (bench/gpu_probe.py)
    "Qwen/Qwen2.5-1.5B": _qwen25("Qwen2.5-1.5B", 28, 1536, 12, 2, 8960, 151936, True, 32768),
}


def shape_from_config(cfg: dict[str, Any], name: str) -> ModelShape:
    """A ModelShape from an HF config.json dict (a nested text_config is used when present)."""
    c = cfg.get("text_config") or cfg
    if any(k in c for k in ("num_experts", "num_local_experts", "n_routed_experts")):
        raise RecipeError(f"model.name_or_path={name}: a mixture-of-experts model; mathrecipe plan models dense "
                          "decoders only")
    try:
        h, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
        model_type = str(c.get("model_type", cfg.get("model_type", "")))
        return ModelShape(
            name=name, layers=int(c["num_hidden_layers"]), hidden=h, heads=heads,
            kv_heads=int(c.get("num_key_value_heads") or heads), head_dim=int(c.get("head_dim") or h // heads),
            intermediate=int(c["intermediate_size"]), vocab=int(c["vocab_size"]),
            tied=bool(c.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
            attention_bias=bool(c.get("attention_bias", model_type == "qwen2")),
            qk_norm=model_type.startswith("qwen3"), max_positions=c.get("max_position_embeddings"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RecipeError(f"model.name_or_path={name}: config.json lacks {e}; mathrecipe plan needs hidden_size, "
                          "num_hidden_layers, num_attention_heads, intermediate_size and vocab_size") from e


def _cached_config(repo_id: str) -> str | None:
    """config.json of a hub id already in the local HF cache (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a valid repo id, no cache: then it is simply not cached
        return None
    return found if isinstance(found, str) else None


def resolve_shape(recipe: Recipe) -> ModelShape:
    """The model's shape: the toy from model.toy, a local folder's config.json, a built-in paper model, or a hub
    id found in the local HF cache."""
    m = recipe.model
    name = m.name_or_path
    if name == "toy":
        t = m.toy
        # the toy tokenizer adds <think>, </think> and \boxed{ to its trained vocabulary
        return ModelShape("toy", t.num_layers, t.hidden_size, t.num_heads, t.num_heads, t.hidden_size // t.num_heads,
                          t.intermediate_size, t.vocab_size + 3, True, max_positions=1024)
    from mathrecipe.modeling import converted_gguf, find_gguf

    gguf = find_gguf(name)  # a GGUF file: the config of its converted folder (converted once, cached)
    local = (converted_gguf(gguf) if gguf else Path(name)) / "config.json"
    if local.is_file():
        return shape_from_config(json.loads(local.read_text()), name)
    lower = {k.lower(): v for k, v in BUILTIN_SHAPES.items()}
    by_base = {k.split("/")[-1].lower(): v for k, v in BUILTIN_SHAPES.items()}
    hit = lower.get(name.lower()) or by_base.get(name.lower())
    if hit is not None:
        return hit
    cached = _cached_config(name)
    if cached:
        return shape_from_config(json.loads(Path(cached).read_text()), name)
    known = ", ".join(sorted(BUILTIN_SHAPES))
    raise RecipeError(f"model.name_or_path={name}: no config.json there and not a built-in shape; point it at a "
                      f"model folder, or use one of: {known}")


# ------------------------------------------------------------------------------------------------ formulas


def _optimizer_note(key: str, optim: str) -> list[str]:
    """8-bit and paged optimizers come from bitsandbytes, which mathrecipe does not install."""
    import importlib.util

    if ("8bit" in optim or optim.startswith("paged_")) and importlib.util.find_spec("bitsandbytes") is None:
        return [f"{key}={optim} needs bitsandbytes (pip install bitsandbytes), not installed here"]
    return []


def checkpointing_note(shape: ModelShape, batch: int, seq: int, act_bytes: int, eager: bool = False) -> str:
    """Both activation figures, so the cost of the checkpointing choice is visible either way."""
    on, off = (sum(v for k, v in activation_bytes(shape, batch, seq, act_bytes, gc, eager).items()
                   if k.startswith("activations")) / GIB for gc in (True, False))
    return f"activations {on:.1f} GiB with gradient checkpointing, {off:.1f} GiB without"


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class Target:
    """What the plan is for: processes (= GPUs), memory per GPU (None: unknown), and whether it is a GPU."""

    gpus: int
    gpu_mem_gib: float | None
    gpu: bool

    @property
    def usable_gib(self) -> float | None:
        return None if self.gpu_mem_gib is None else self.gpu_mem_gib * (1 - HEADROOM)


@dataclass
class StagePlan:
    """One stage: memory items per GPU (GiB) by phase, the verdict, and the work it does."""

    stage: str
    setup: str
    items: list[tuple[str, float, str]] = field(default_factory=list)  # (name, GiB, phase: all|train|rollout)
    phases_overlap: bool = True  # False: train and rollout phases do not hold memory at the same time
    usable_gib: float | None = None
    problems: list[str] = field(default_factory=list)  # a part that cannot work whatever the total (e.g. vLLM share)
    fixes: list[str] = field(default_factory=list)
    work: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total_gib(self) -> float:
        base = sum(g for _, g, ph in self.items if ph == "all")
        train = sum(g for _, g, ph in self.items if ph == "train")
        rollout = sum(g for _, g, ph in self.items if ph == "rollout")
        return base + (train + rollout if self.phases_overlap else max(train, rollout))

    @property
    def fits(self) -> bool | None:
        if self.usable_gib is None:
            return None
        return self.total_gib <= self.usable_gib and not self.problems

    @property
    def shortfall_gib(self) -> float:
        return 0.0 if self.usable_gib is None else max(0.0, self.total_gib - self.usable_gib)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "setup": self.setup,
                "items": [{"name": n, "gib": round(g, 2), "phase": ph} for n, g, ph in self.items],
                "phases_overlap": self.phases_overlap, "total_gib": round(self.total_gib, 2),
                "usable_gib": None if self.usable_gib is None else round(self.usable_gib, 2), "fits": self.fits,
                "shortfall_gib": round(self.shortfall_gib, 2), "problems": self.problems, "fixes": self.fixes,
                "work": self.work, "notes": self.notes}


@dataclass
class Plan:
    """Every enabled stage of a recipe planned for a target."""

    model: ModelShape
    target: Target
    stages: list[StagePlan]
    notes: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        """One line per stage that cannot fit: the stage, the shortfall and the fix."""
        out = []
        for s in self.stages:
            if s.fits is False:
                why = "; ".join(s.problems) if s.problems else (
                    f"needs {s.total_gib:.1f} GiB per GPU, {s.shortfall_gib:.1f} GiB over the {s.usable_gib:.1f} GiB "
                    f"usable on a {self.target.gpu_mem_gib:g} GiB GPU")
                fix = "; ".join(s.fixes) if s.fixes else "no single setting fixes it: use more or larger GPUs"
                out.append(f"{s.stage}: {why}; fix: {fix}")
        return out

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.stage == name)

    def to_dict(self) -> dict[str, Any]:
        shape = {k: v for k, v in asdict(self.model).items() if k != "counted_params"}  # "params" has the count
        return {"model": {**shape, "params": self.model.params,
                          "kv_bytes_per_token_bf16": self.model.kv_bytes_per_token(2)},
                "target": asdict(self.target) | {"usable_gib": self.target.usable_gib},
                "stages": [s.to_dict() for s in self.stages], "failures": self.failures(), "notes": self.notes}


def _resolve(precision: str, checkpointing: bool | None, gpu: bool) -> tuple[bool, bool]:
    """(mixed precision, gradient checkpointing) for the target, as mathrecipe.hardware resolves them there."""
    if precision in ("bf16", "fp16") and not gpu:  # planning a GPU recipe on a CPU-only target: say so, not raise
        return True, bool(checkpointing)
    resolved, gc = resolve_precision(precision, checkpointing, gpu)
    return resolved != "fp32", gc


def _gib(items: dict[str, float], phase: str = "all") -> list[tuple[str, float, str]]:
    return [(k, v / GIB, phase) for k, v in items.items()]


def _shard_label(launch: StageLaunch, n: int) -> str:
    if launch.fsdp is not None:
        return f"FSDP{launch.fsdp.get('version', 2)} ({launch.shards} sharded) over {n}"
    if launch.zero_stage is not None:
        return f"ZeRO-{launch.zero_stage} over {n}"
    return "DDP" if n > 1 else "one process"


def _data_rows(path: str | None) -> tuple[int | None, list[int] | None]:
    """Rows (and ``trace_tokens`` when the set has them) of a local dataset; (None, None) when not on disk."""
    if not path or not Path(path).exists():
        return None, None
    from mathrecipe.data.io import load_table

    ds = load_table(path)
    tokens = list(ds["trace_tokens"]) if "trace_tokens" in ds.column_names else None
    return ds.num_rows, tokens


def _sft_work(recipe: Recipe, n: int, seq: int) -> dict[str, Any]:
    s, d = recipe.sft, recipe.data
    per_step = s.batch_size * s.gradient_accumulation_steps * n
    work: dict[str, Any] = {"sequences_per_step": per_step, "tokens_per_step_max": per_step * seq, "epochs": s.epochs}
    if d.source == "toy":
        rows, tokens, how = d.toy.n_sft, None, "toy rows (before dedup)"
    else:
        rows, tokens = _data_rows(d.sft_path)
        how = f"rows of {d.sft_path}"
    if rows is None:
        work["note"] = f"{d.sft_path} is not on disk yet: steps follow once it is built (mathrecipe data build)"
        return work
    approx = ""
    if s.packing and tokens is not None:
        rows_eff = math.ceil(sum(min(max(t, 0), seq) for t in tokens) / seq)  # packed rows, trace tokens only
        approx, how = "~", f"{rows} rows packed into ~{rows_eff} rows of {seq} tokens (from trace_tokens)"
    elif s.packing:
        rows_eff, approx, how = rows, "<=", f"{rows} rows (packing: at most this many packed rows)"
    else:
        rows_eff = rows
    per_epoch = math.ceil(math.ceil(rows_eff / (s.batch_size * n)) / s.gradient_accumulation_steps)
    work.update(rows=rows, rows_from=how, steps_per_epoch=per_epoch, optimizer_steps=per_epoch * s.epochs,
                approx=approx, tokens_total_max=per_epoch * s.epochs * per_step * seq)
    return work


def plan_sft(recipe: Recipe, shape: ModelShape, target: Target) -> StagePlan:
    """SFT: training state + extras + activations of batch_size packed rows of max_length tokens."""
    s = recipe.sft
    n = target.gpus
    launch = stage_launch(recipe, "sft")
    mixed, gc = _resolve(s.precision, s.gradient_checkpointing, target.gpu)
    act = 2 if mixed else 4
    seq = s.max_length or shape.max_positions or 32768
    eager = recipe.model.attn_implementation == "eager"
    plan = StagePlan("sft", f"{_shard_label(launch, n)}, {'bf16' if mixed else 'fp32'}, "
                            f"{'gradient checkpointing' if gc else 'no checkpointing'}, {s.optim}, "
                            f"{s.batch_size} x {seq}-token {'packed ' if s.packing else ''}rows",
                     usable_gib=target.usable_gib)
    if not s.max_length:
        plan.notes.append(f"sft.max_length is unset: planned at {seq} tokens per row")
    plan.notes += _optimizer_note("sft.optim", s.optim)
    plan.items += _gib(train_state_bytes(shape.params, launch, n, mixed, s.optim))
    plan.items += _gib(state_extra_bytes(shape, launch, n, mixed))
    plan.items += _gib(activation_bytes(shape, s.batch_size, seq, act, gc, eager))
    plan.notes.append(checkpointing_note(shape, s.batch_size, seq, act, eager))
    if target.gpu:
        plan.items.append(("CUDA context", CUDA_CONTEXT_GIB, "all"))
    plan.work = _sft_work(recipe, n, seq)
    return plan


def _grpo_work(recipe: Recipe, n: int) -> dict[str, Any]:
    g, d = recipe.grpo, recipe.data
    gen = grpo_generation_batch(recipe, n)
    prompts = gen // g.num_generations
    work: dict[str, Any] = {"optimizer_steps": g.max_steps, "completions_per_step": gen, "prompts_per_step": prompts,
                            "completion_tokens_per_step_max": gen * g.max_completion_length,
                            "completion_tokens_total_max": gen * g.max_completion_length * g.max_steps}
    rows = d.toy.n_rl if d.source == "toy" else _data_rows(d.grpo_path)[0]
    if rows:
        work.update(prompt_rows=rows, epochs_of_prompts=round(prompts * g.max_steps / rows, 3))
    return work


def plan_grpo(recipe: Recipe, shape: ModelShape, target: Target) -> StagePlan:
    """GRPO: training state + reference model + activations + the rollout (see the module docstring)."""
    g = recipe.grpo
    n = target.gpus
    launch = stage_launch(recipe, "grpo")
    mixed, gc = _resolve(g.precision, g.gradient_checkpointing, target.gpu)
    act = 2 if mixed else 4
    optim = str(g.extra.get("optim", "adamw_torch_fused"))
    seq = PROMPT_TOKENS + g.max_completion_length
    colocate = g.backend == "vllm" and g.vllm_mode == "colocate"
    sleep = bool(g.extra.get("vllm_enable_sleep_mode", False))
    rollout = {"vllm": f"vLLM {g.vllm_mode}" + (" with sleep mode" if colocate and sleep else ""),
               "hf": "HF generate", "paged": "paged generate"}[g.backend]
    plan = StagePlan("grpo", f"{_shard_label(launch, n)}, {'bf16' if mixed else 'fp32'}, "
                             f"{'gradient checkpointing' if gc else 'no checkpointing'}, {optim}, {rollout}, "
                             f"{g.batch_size} x ({PROMPT_TOKENS} + {g.max_completion_length})-token sequences",
                     usable_gib=target.usable_gib)
    plan.notes += _optimizer_note("grpo.extra.optim", optim)
    plan.items += _gib(train_state_bytes(shape.params, launch, n, mixed, optim))
    plan.items += _gib(state_extra_bytes(shape, launch, n, mixed))
    if g.beta > 0:
        ref = (2 if mixed else 4) * shape.params / (n if launch.zero_stage == 3 else 1)
        plan.items.append(("reference model", ref / GIB, "all"))
    plan.items += _gib(activation_bytes(shape, g.batch_size, seq, act, gc), "train")
    plan.notes.append(checkpointing_note(shape, g.batch_size, seq, act))
    kv_tok = shape.kv_bytes_per_token(2 if mixed else 4)
    if colocate:
        if target.gpu_mem_gib is None:
            plan.notes.append("vLLM colocate share unknown without the GPU's memory (--gpu-mem)")
        else:
            tp = int(g.extra.get("vllm_tensor_parallel_size", 1))
            share = g.vllm_gpu_memory_utilization * target.gpu_mem_gib
            weights = 2 * shape.params / tp / GIB
            kv = engine_kv_room_gib(share, shape.params, tp)
            need = seq * kv_tok / tp / GIB
            plan.items.append((f"vLLM share ({g.vllm_gpu_memory_utilization:g} x card)", share, "rollout"))
            plan.phases_overlap = not sleep
            local = grpo_generation_batch(recipe, n) // n
            plan.work["vllm_kv_gib"] = round(kv, 2)
            plan.work["vllm_concurrent_sequences"] = max(0, int(kv // need)) if need else None
            if kv < need:
                least = math.ceil((weights + ENGINE_RUNTIME_GIB + need) / target.gpu_mem_gib * 20) / 20
                fix = (f"raise grpo.vllm_gpu_memory_utilization to >= {least:.2f}" if least < 1 - HEADROOM else
                       "vLLM cannot hold the model on this GPU (raise grpo.extra.vllm_tensor_parallel_size, or "
                       "grpo.backend=hf)")
                plan.problems.append(
                    f"the vLLM share {share:.1f} GiB cannot hold {weights:.1f} GiB of weights, ~{ENGINE_RUNTIME_GIB:g} "
                    f"GiB runtime and one {seq}-token sequence ({need:.1f} GiB of KV cache): {fix}")
            elif kv // need < local:
                plan.notes.append(f"vLLM holds {int(kv // need)} of this GPU's {local} completions at once; the "
                                  "rest wait (slower, not an error)")
    elif g.backend in ("hf", "paged"):
        local = grpo_generation_batch(recipe, n) // n
        roll = {"rollout KV cache": local * sequence_bytes(kv_tok, seq, shape.vocab)}
        if launch.zero_stage == 3:  # ds3_gather_for_generation: the whole model is gathered to generate
            roll["weights gathered for generation"] = 2 * shape.params
        plan.items += _gib(roll, "rollout")
        plan.phases_overlap = False
    if target.gpu:
        plan.items.append(("CUDA context", CUDA_CONTEXT_GIB, "all"))
    plan.work.update(_grpo_work(recipe, n))
    return plan


def _eval_budget(shape: ModelShape, target: Target, recipe: Recipe) -> float | None:
    e = recipe.eval
    if e.kv_cache_gib is not None:
        return e.kv_cache_gib
    if target.usable_gib is None:
        return None
    dtype = 2 if target.gpu else 4
    return target.usable_gib - CUDA_CONTEXT_GIB - dtype * shape.params / GIB


def plan_eval(recipe: Recipe, shape: ModelShape, target: Target) -> StagePlan:
    """Evaluation of a checkpoint: weights + KV cache of the generate() batch (or vLLM's share)."""
    e = recipe.eval
    dtype = 2 if target.gpu else 4
    seq = PROMPT_TOKENS + e.max_new_tokens
    plan = StagePlan("eval", "", usable_gib=target.usable_gib)
    problems = recipe.data.toy.n_test if recipe.data.source == "toy" else _data_rows(recipe.data.eval_path)[0]
    sequences = None if problems is None else problems * e.samples
    plan.work = {"samples": e.samples, "sequence_tokens_max": seq}
    if problems is not None:
        plan.work.update(problems=problems, sequences=sequences, generated_tokens_max=sequences * e.max_new_tokens)
    backend = BACKENDS[e.backend]
    if backend.gpu_share is not None:  # an engine that preallocates its share of the card
        name, part = backend.label, backend.gpu_share
        plan.setup = f"{name} ({part:g} of the card), sequences of {PROMPT_TOKENS} + {e.max_new_tokens} tokens"
        if target.gpu_mem_gib is not None:
            share = part * target.gpu_mem_gib
            plan.items.append((f"{name} share ({part:g} x card)", share, "all"))
            if engine_kv_room_gib(share, shape.params) < seq * shape.kv_bytes_per_token(2) / GIB:
                plan.problems.append(f"{name}'s {share:.1f} GiB cannot hold the {2 * shape.params / GIB:.1f} GiB "
                                     f"weights and one {seq}-token sequence; use a larger GPU or tensor parallelism")
        return plan
    per_seq = eval_batch_bytes(shape, seq, dtype)
    budget = _eval_budget(shape, target, recipe)
    if e.batch_size == "auto":
        if budget is None:
            batch = None
            plan.notes.append("eval.batch_size=auto: resolved on the GPU (no memory known here)")
        else:
            batch = auto_eval_batch_size(shape, seq, budget, dtype)
            if sequences is not None:
                batch = min(batch, sequences)
            plan.work["auto_batch_size"] = batch
            if batch < 1:
                plan.problems.append(f"not one {seq}-token sequence fits the {budget:.1f} GiB KV budget")
    else:
        batch = e.batch_size
    plan.setup = (f"{backend.label}, batch {batch if batch is not None else 'auto'} x ({PROMPT_TOKENS} + "
                  f"{e.max_new_tokens}) tokens")
    plan.items.append(("weights", dtype * shape.params / GIB, "all"))
    if batch:
        plan.items.append(("KV cache + decode logits", batch * per_seq / GIB, "all"))
        if sequences is not None:
            plan.work["generate_calls"] = math.ceil(sequences / batch)
    if e.kv_cache_gib is not None and batch and batch * per_seq / GIB > e.kv_cache_gib:
        plan.problems.append(f"eval.batch_size={batch} needs {batch * per_seq / GIB:.1f} GiB of KV cache, over "
                             f"eval.kv_cache_gib={e.kv_cache_gib:g}")
    if target.gpu:
        plan.items.append(("CUDA context", CUDA_CONTEXT_GIB, "all"))
    if budget is not None and e.batch_size != "auto":
        plan.work["largest_batch_that_fits"] = auto_eval_batch_size(shape, seq, budget, dtype)
    return plan


_PLANNERS = {"sft": plan_sft, "grpo": plan_grpo, "eval": plan_eval}


def _with(recipe: Recipe, changes: dict[str, Any]) -> Recipe:
    """A copy of the recipe with dotted keys changed (``grpo.extra.x`` sets a key of the extra mapping)."""
    r = copy.deepcopy(recipe)
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node: Any = r
        for p in path:
            node = node[p] if isinstance(node, dict) else getattr(node, p)
        if isinstance(node, dict):
            node[last] = value
        else:
            setattr(node, last, value)
    return r


def _fmt(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _candidates(recipe: Recipe, stage: str, target: Target, plan: StagePlan) -> list[dict[str, Any]]:
    """Settings that lower a stage's memory, in the order a user would try them (least change to the recipe's
    meaning first). Each keeps the global batch."""
    out: list[dict[str, Any]] = []
    zero3 = "recipes/accelerate/deepspeed_zero3.json"
    if stage in ("sft", "grpo"):
        s = getattr(recipe, stage)
        launch = stage_launch(recipe, stage)
        _, gc = _resolve(s.precision, s.gradient_checkpointing, target.gpu)
        if stage == "grpo" and s.backend == "vllm" and s.vllm_mode == "colocate" \
                and not s.extra.get("vllm_enable_sleep_mode"):
            out.append({"grpo.extra.vllm_enable_sleep_mode": True})
        if not gc:
            out.append({f"{stage}.gradient_checkpointing": True})
        optim = s.optim if stage == "sft" else str(s.extra.get("optim", "adamw_torch_fused"))
        if moment_bytes(optim) > 2:
            out.append({f"{stage}.optim" if stage == "sft" else "grpo.extra.optim": "paged_adamw_8bit"})
        b, a = s.batch_size, s.gradient_accumulation_steps
        while b > 1 and b % 2 == 0:
            b, a = b // 2, a * 2
            if stage == "grpo" and (b * a) % s.num_generations:
                break
            out.append({f"{stage}.batch_size": b, f"{stage}.gradient_accumulation_steps": a})
        if target.gpus > 1 and launch.shards != "weights" and not s.fsdp and Path(zero3).is_file():
            out.append({f"{stage}.deepspeed": zero3})
    elif stage == "eval":
        e = recipe.eval
        fit = plan.work.get("largest_batch_that_fits")
        if BACKENDS[e.backend].gpu_share is None:  # memory grows with the batch: auto, or an engine
            if e.batch_size != "auto" and fit:
                out.append({"eval.batch_size": "auto"})
            out += [{"eval.backend": name} for name, b in BACKENDS.items() if b.gpu_share is not None]
    return out


def _find_fixes(recipe: Recipe, shape: ModelShape, target: Target, plan: StagePlan) -> list[str]:
    """The first single setting that makes the stage fit, else the shortest cumulative run of them."""
    planner = _PLANNERS[plan.stage]
    cands = _candidates(recipe, plan.stage, target, plan)
    for c in cands:
        p = planner(_with(recipe, c), shape, target)
        if p.fits:
            return [", ".join(f"{k}={_fmt(v)}" for k, v in c.items()) + f" (-> {p.total_gib:.1f} GiB{_auto(p)})"]
    acc: dict[str, Any] = {}
    for c in cands:
        acc.update(c)
        p = planner(_with(recipe, acc), shape, target)
        if p.fits:
            return [", ".join(f"{k}={_fmt(v)}" for k, v in acc.items()) + f" together (-> {p.total_gib:.1f} GiB)"]
    return []


def _auto(p: StagePlan) -> str:
    return f", batch {p.work['auto_batch_size']}" if "auto_batch_size" in p.work else ""


def plan_recipe(recipe: Recipe, target: Target) -> Plan:
    """Plan every enabled stage (and the evaluation) of ``recipe`` for ``target``; launch files are validated."""
    validate_launch(recipe)
    shape = resolve_shape(recipe)
    stages = []
    for name in ("sft", "grpo", "eval"):
        if name != "eval" and not getattr(recipe, name).enabled:
            continue
        p = _PLANNERS[name](recipe, shape, target)
        if p.fits is False:
            p.fixes = _find_fixes(recipe, shape, target, p)
        stages.append(p)
    notes = []
    if recipe.accelerate_config:
        from mathrecipe.launch import load_accelerate_config

        n = load_accelerate_config(recipe.accelerate_config).get("num_processes")
        if n is not None and n != target.gpus:
            notes.append(f"accelerate_config {recipe.accelerate_config} launches {n} processes; this plan is for "
                         f"{target.gpus} (batch math and sharding use {target.gpus})")
    return Plan(shape, target, stages, notes)


def detect_target(recipe: Recipe, gpus: int | None = None, gpu_mem_gib: float | None = None) -> Target:
    """The target: given values first; else the launch (WORLD_SIZE / accelerate_config), torch.cuda, or 1 CPU."""
    cuda = False
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # planning needs no torch
        pass
    if gpus is None:
        ws = os.environ.get("WORLD_SIZE")
        if ws and ws.isdigit():
            gpus = int(ws)
        elif recipe.accelerate_config:
            from mathrecipe.launch import load_accelerate_config

            gpus = load_accelerate_config(recipe.accelerate_config).get("num_processes")
        if gpus is None:
            gpus = torch.cuda.device_count() if cuda else 1
    if gpu_mem_gib is None and cuda:
        gpu_mem_gib = torch.cuda.get_device_properties(0).total_memory / GIB
    return Target(gpus=gpus, gpu_mem_gib=gpu_mem_gib, gpu=cuda or gpu_mem_gib is not None)


def check_fits(recipe: Recipe, gpus: int | None = None, gpu_mem_gib: float | None = None) -> Plan:
    """The plan for this machine (or the given GPUs): ``Plan.failures()`` lists what cannot fit, one line each.

    GPU count and memory come from torch.cuda when not given; on a CPU without ``gpu_mem_gib`` the plan has the
    estimates, steps and tokens but no verdict (``fits`` is None, no failures).
    """
    if gpus is not None and gpus < 1:
        raise RecipeError(f"gpus must be >= 1, got {gpus}")
    if gpu_mem_gib is not None and gpu_mem_gib <= 0:
        raise RecipeError(f"gpu memory must be > 0 GiB, got {gpu_mem_gib}")
    return plan_recipe(recipe, detect_target(recipe, gpus, gpu_mem_gib))


def checkpointing_needed(recipe: Recipe, stage: str) -> bool:
    """Gradient checkpointing for ``stage`` ("sft"/"grpo") when the recipe leaves it unset (null) on a GPU: on only
    when the plan says the stage does not fit without it. Checkpointing recomputes every layer's forward (about a
    third more compute: 13.2k vs 15.1k tokens/s measured on an H200), so it is used only where memory needs it."""
    trial = copy.deepcopy(recipe)
    getattr(trial, stage).gradient_checkpointing = False
    try:
        plan = check_fits(trial)
    except RecipeError:
        return True
    verdict = next((s.fits for s in plan.stages if s.stage == stage), None)
    return verdict is not True  # unknown (no GPU visible) or does not fit: keep checkpointing


# ------------------------------------------------------------------------------------------------ rendering / CLI


def _n(x: int) -> str:
    return f"{x:,}"


def work_text(s: StagePlan) -> str:
    """One line on what a stage does: optimizer steps and tokens (upper bounds), or evaluation sequences."""
    w = s.work
    if s.stage == "sft":
        head = (f"{_n(w['sequences_per_step'])} rows x <= {_n(w['tokens_per_step_max'] // w['sequences_per_step'])} "
                f"tokens = <= {_n(w['tokens_per_step_max'])} tokens per optimizer step")
        if "optimizer_steps" not in w:
            return f"{head}; steps: {w.get('note', 'unknown')}"
        return (f"{head}; {w['rows_from']} -> {w['approx']}{_n(w['steps_per_epoch'])} steps/epoch x {w['epochs']} "
                f"epochs = {w['approx']}{_n(w['optimizer_steps'])} steps, <= {_n(w['tokens_total_max'])} tokens")
    if s.stage == "grpo":
        text = (f"{_n(w['optimizer_steps'])} optimizer steps x {_n(w['completions_per_step'])} completions "
                f"({_n(w['prompts_per_step'])} prompts) = <= {_n(w['completion_tokens_per_step_max'])} completion "
                f"tokens per step, <= {_n(w['completion_tokens_total_max'])} in all")
        if "prompt_rows" in w:
            text += f"; {w['epochs_of_prompts']:g} epochs of {_n(w['prompt_rows'])} prompts"
        return text
    if "sequences" not in w:
        return f"{w['samples']} samples per problem of <= {_n(w['sequence_tokens_max'])} tokens " \
               "(problem count: eval_path is not a local file)"
    text = (f"{_n(w['problems'])} problems x {w['samples']} samples = {_n(w['sequences'])} sequences, "
            f"<= {_n(w['generated_tokens_max'])} generated tokens")
    if "generate_calls" in w:
        text += f", {_n(w['generate_calls'])} generate() calls"
    return text


def render(plan: Plan, source: str = "") -> str:
    """The plan as text: per stage its memory table, verdict and work."""
    t = plan.target
    mem = f" x {t.gpu_mem_gib:g} GiB (plan to {t.usable_gib:.1f} GiB: {HEADROOM:.0%} allocator headroom)" \
        if t.gpu_mem_gib is not None else " (memory unknown: estimates only, no verdict)"
    lines = [f"mathrecipe plan{': ' + source if source else ''}",
             f"model {plan.model.name}: {plan.model.describe()}; KV cache "
             f"{plan.model.kv_bytes_per_token(2) / 1024:.0f} KiB/token (bf16)",
             f"target: {t.gpus} {'GPU' if t.gpu else 'CPU process'}{'s' if t.gpus > 1 else ''}{mem}",
             *[f"note: {n}" for n in plan.notes], ""]
    for s in plan.stages:
        lines.append(f"{s.stage.upper()}  {s.setup}")
        for name, gib, phase in s.items:
            tag = "" if phase == "all" else f"  [{phase}]"
            lines.append(f"  {name:<44}{gib:>9.2f} GiB{tag}")
        peak = "" if s.phases_overlap else " (peak phase)"
        if s.fits is None:
            verdict = ""
        elif s.fits:
            verdict = f"  fits ({s.usable_gib - s.total_gib:.1f} GiB spare)"
        else:
            verdict = f"  DOES NOT FIT ({s.shortfall_gib:.1f} GiB over)" if s.shortfall_gib else "  DOES NOT FIT"
        per = "total per GPU" if t.gpu else "total per process"
        lines.append(f"  {per + peak:<44}{s.total_gib:>9.2f} GiB{verdict}")
        for p in s.problems:
            lines.append(f"  problem: {p}")
        for f in s.fixes:
            lines.append(f"  fix: {f}")
        for n in s.notes:
            lines.append(f"  note: {n}")
        if not s.phases_overlap:
            lines.append("  note: train and rollout memory are not held at once; the larger phase counts")
        lines.append("  work: " + work_text(s))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def add_plan_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``mathrecipe plan`` on the CLI's subparsers."""
    p = sub.add_parser(
        "plan", help="will it fit? per-GPU memory, steps and tokens of every stage (no GPU needed)",
        description="Estimate, per GPU, the memory of each stage of a recipe (weights, gradients, optimizer state "
        "sharded per ZeRO stage / FSDP, activations with or without gradient checkpointing, the GRPO rollout and "
        "the evaluation KV cache), the optimizer steps and tokens, and say per stage whether it fits and which "
        "setting to change. Exits 1 when a stage does not fit. Formulas: mathrecipe.plan's docstring.")
    p.add_argument("recipe", help="recipe YAML")
    p.add_argument("overrides", nargs="*", help="key=value overrides (values read as YAML)")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs (one process each); default: accelerate_config's num_processes, else this machine's")
    p.add_argument("--gpu-mem", type=float, default=None, metavar="GiB",
                   help="memory per GPU in GiB (e.g. 141 for H200, 80 for H100); default: this machine's GPU")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)
    return p


def cmd_plan(args: argparse.Namespace) -> int:
    """``mathrecipe plan``: print the plan; exit 1 when a stage does not fit."""
    from mathrecipe.recipe import load_recipe

    if args.gpus is not None and args.gpus < 1:
        raise RecipeError(f"--gpus must be >= 1, got {args.gpus}")
    if args.gpu_mem is not None and args.gpu_mem <= 0:
        raise RecipeError(f"--gpu-mem must be > 0 (GiB per GPU), got {args.gpu_mem}")
    recipe = load_recipe(args.recipe, list(args.overrides))
    plan = check_fits(recipe, args.gpus, args.gpu_mem)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(render(plan, args.recipe), end="")
        for f in plan.failures():
            print(f"does not fit: {f}")
    return 1 if plan.failures() else 0
