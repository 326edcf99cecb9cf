"""``mathrecipe plan`` on the command line: the plan as text (memory table, verdict, fixes and work per stage) or
JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mathrecipe.plan.stages import HEADROOM, Plan, StagePlan
from mathrecipe.recipe import RecipeError


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
               "(problem count: test_path is not a local file)"
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
        "setting to change. Exits 1 when a stage does not fit. Formulas: the docstrings of mathrecipe.memory and "
        "mathrecipe.plan.stages.")
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
    from mathrecipe.plan import check_fits
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
