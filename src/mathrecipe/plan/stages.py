"""Per-stage planners of ``mathrecipe plan``: per-GPU memory items (the formulas of :mod:`mathrecipe.memory`), the
verdict against the target, and the work (optimizer steps, tokens, sequences) of each stage.

  - sft: training state + activations of b packed rows of s = sft.max_length tokens.
  - grpo: training state + the reference model (beta > 0: a * P, sharded under ZeRO-3) + activations of b
    sequences of (512-token prompt + max_completion_length) + the rollout: vLLM colocate holds
    vllm_gpu_memory_utilization x the card (its bf16 weights 2P / tensor-parallel, ~2 GiB runtime, the KV cache);
    without grpo.extra.vllm_enable_sleep_mode that share stays allocated through the train step, with it the peak is
    the larger of the rollout and train phases. hf/paged generate: the KV cache of the per-device generation batch
    (and, under ZeRO-3, all weights gathered), freed before the train step.
  - eval: by ``eval.backend``'s memory model (``generation.BACKENDS``). hf: bf16 weights + batch x (512 +
    max_new_tokens) tokens of KV cache + batch x V x 8 bytes (last-position fp32 logits and probabilities);
    ``eval.generate_batch_size: auto`` is the largest batch whose KV fits eval.kv_cache_gib or, unset, the card less
    the weights and reserve. An engine (vLLM): its share (0.9) must hold the weights and one sequence.

A stage fits when its total (with 1 GiB of CUDA context and communication buffers) is within 95% of the card (the
rest is allocator fragmentation). Estimates are upper bounds by design: prompts are taken at 512 tokens, completions
at their maximum length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mathrecipe.evaluate.generation import BACKENDS
from mathrecipe.hardware import resolve_precision
from mathrecipe.launch import StageLaunch, grpo_generation_batch, stage_launch
from mathrecipe.memory import (
    ENGINE_RUNTIME_GIB,
    GIB,
    PROMPT_TOKENS,
    ModelShape,
    activation_bytes,
    auto_eval_batch_size,
    engine_kv_room_gib,
    eval_batch_bytes,
    sequence_bytes,
    state_extra_bytes,
    train_state_bytes,
)
from mathrecipe.recipe import Recipe

CUDA_CONTEXT_GIB = 1.0  # CUDA context, cuBLAS workspace, NCCL buffers
HEADROOM = 0.05  # share of the card left to allocator fragmentation


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


def resolve_flags(precision: str, checkpointing: bool | None, gpu: bool) -> tuple[bool, bool]:
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
    per_step = s.per_device_train_batch_size * s.gradient_accumulation_steps * n
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
    per_epoch = math.ceil(math.ceil(rows_eff / (s.per_device_train_batch_size * n)) / s.gradient_accumulation_steps)
    work.update(rows=rows, rows_from=how, steps_per_epoch=per_epoch, optimizer_steps=per_epoch * s.epochs,
                approx=approx, tokens_total_max=per_epoch * s.epochs * per_step * seq)
    return work


def _training_plan(stage: str, recipe: Recipe, shape: ModelShape, target: Target, optim: str, optim_key: str,
                   rows: str, notes: list[str]) -> tuple[StagePlan, StageLaunch, bool, bool]:
    """What SFT and GRPO share: the launch, precision and checkpointing on the target, the setup line (layout,
    precision, checkpointing, optimizer, ``rows``), ``notes`` then the optimizer's, and the training state per
    GPU (weights, gradients, master weights, moments, the layout's extras). Returns (plan, launch, mixed, gc)."""
    s = getattr(recipe, stage)
    launch = stage_launch(recipe, stage)
    mixed, gc = resolve_flags(s.precision, s.gradient_checkpointing, target.gpu)
    plan = StagePlan(stage, f"{_shard_label(launch, target.gpus)}, {'bf16' if mixed else 'fp32'}, "
                            f"{'gradient checkpointing' if gc else 'no checkpointing'}, {optim}, {rows}",
                     usable_gib=target.usable_gib, notes=notes + _optimizer_note(optim_key, optim))
    plan.items += _gib(train_state_bytes(shape.params, launch, target.gpus, mixed, optim))
    plan.items += _gib(state_extra_bytes(shape, launch, target.gpus, mixed))
    return plan, launch, mixed, gc


def plan_sft(recipe: Recipe, shape: ModelShape, target: Target) -> StagePlan:
    """SFT: training state + extras + activations of batch_size packed rows of max_length tokens."""
    s = recipe.sft
    seq = s.max_length or shape.max_positions or 32768
    eager = recipe.model.attn_implementation == "eager"
    unset = [] if s.max_length else [f"sft.max_length is unset: planned at {seq} tokens per row"]
    plan, _, mixed, gc = _training_plan("sft", recipe, shape, target, s.optim, "sft.optim",
                                        f"{s.per_device_train_batch_size} x {seq}-token "
                                        f"{'packed ' if s.packing else ''}rows", unset)
    act = 2 if mixed else 4
    plan.items += _gib(activation_bytes(shape, s.per_device_train_batch_size, seq, act, gc, eager))
    plan.notes.append(checkpointing_note(shape, s.per_device_train_batch_size, seq, act, eager))
    if target.gpu:
        plan.items.append(("CUDA context", CUDA_CONTEXT_GIB, "all"))
    plan.work = _sft_work(recipe, target.gpus, seq)
    return plan


def _grpo_work(recipe: Recipe, n: int) -> dict[str, Any]:
    g, d = recipe.grpo, recipe.data
    gen = grpo_generation_batch(recipe, n)
    prompts = gen // g.num_generations
    work: dict[str, Any] = {"optimizer_steps": g.max_steps, "completions_per_step": gen, "prompts_per_step": prompts,
                            "completion_tokens_per_step_max": gen * g.max_completion_length,
                            "completion_tokens_total_max": gen * g.max_completion_length * g.max_steps}
    rows = d.toy.n_grpo if d.source == "toy" else _data_rows(d.grpo_path)[0]
    if rows:
        work.update(prompt_rows=rows, epochs_of_prompts=round(prompts * g.max_steps / rows, 3))
    return work


def plan_grpo(recipe: Recipe, shape: ModelShape, target: Target) -> StagePlan:
    """GRPO: training state + reference model + activations + the rollout (see the module docstring)."""
    g = recipe.grpo
    n = target.gpus
    optim = str(g.extra.get("optim", "adamw_torch_fused"))
    seq = PROMPT_TOKENS + g.max_completion_length
    colocate = g.backend == "vllm" and g.vllm_mode == "colocate"
    sleep = bool(g.extra.get("vllm_enable_sleep_mode", False))
    rollout = {"vllm": f"vLLM {g.vllm_mode}" + (" with sleep mode" if colocate and sleep else ""),
               "hf": "HF generate", "paged": "paged generate"}[g.backend]
    plan, launch, mixed, gc = _training_plan(
        "grpo", recipe, shape, target, optim, "grpo.extra.optim",
        f"{rollout}, {g.per_device_train_batch_size} x ({PROMPT_TOKENS} + {g.max_completion_length})-token "
        "sequences", [])
    act = 2 if mixed else 4
    if g.beta > 0:
        ref = (2 if mixed else 4) * shape.params / (n if launch.zero_stage == 3 else 1)
        plan.items.append(("reference model", ref / GIB, "all"))
    plan.items += _gib(activation_bytes(shape, g.per_device_train_batch_size, seq, act, gc), "train")
    plan.notes.append(checkpointing_note(shape, g.per_device_train_batch_size, seq, act))
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


def _eval_kv_gib(shape: ModelShape, target: Target, recipe: Recipe) -> float | None:
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
    problems = recipe.data.toy.n_test if recipe.data.source == "toy" else _data_rows(recipe.data.test_path)[0]
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
    kv_gib = _eval_kv_gib(shape, target, recipe)
    if e.generate_batch_size == "auto":
        if kv_gib is None:
            batch = None
            plan.notes.append("eval.generate_batch_size=auto: resolved on the GPU (no memory known here)")
        else:
            batch = auto_eval_batch_size(shape, seq, kv_gib, dtype)
            if sequences is not None:
                batch = min(batch, sequences)
            plan.work["auto_batch_size"] = batch
            if batch < 1:
                plan.problems.append(f"not one {seq}-token sequence fits the {kv_gib:.1f} GiB for the KV cache")
    else:
        batch = e.generate_batch_size
    plan.setup = (f"{backend.label}, batch {batch if batch is not None else 'auto'} x ({PROMPT_TOKENS} + "
                  f"{e.max_new_tokens}) tokens")
    plan.items.append(("weights", dtype * shape.params / GIB, "all"))
    if batch:
        plan.items.append(("KV cache + decode logits", batch * per_seq / GIB, "all"))
        if sequences is not None:
            plan.work["generate_calls"] = math.ceil(sequences / batch)
    if e.kv_cache_gib is not None and batch and batch * per_seq / GIB > e.kv_cache_gib:
        plan.problems.append(f"eval.generate_batch_size={batch} needs {batch * per_seq / GIB:.1f} GiB of KV cache, "
                             "over "
                             f"eval.kv_cache_gib={e.kv_cache_gib:g}")
    if target.gpu:
        plan.items.append(("CUDA context", CUDA_CONTEXT_GIB, "all"))
    if kv_gib is not None and e.generate_batch_size != "auto":
        plan.work["largest_batch_that_fits"] = auto_eval_batch_size(shape, seq, kv_gib, dtype)
    return plan


PLANNERS = {"sft": plan_sft, "grpo": plan_grpo, "eval": plan_eval}
