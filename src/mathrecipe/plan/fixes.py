"""Fix search for ``mathrecipe plan``: the settings that make a stage fit, tried in the order a user would try them,
each applied through the recipe's own override path (so a candidate that breaks the recipe is no fix)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathrecipe.evaluate.generation import BACKENDS
from mathrecipe.launch import stage_launch
from mathrecipe.memory import ModelShape, moment_bytes
from mathrecipe.plan.stages import PLANNERS, StagePlan, Target, resolve_flags
from mathrecipe.recipe import Recipe, RecipeError, _build, _set_path, validate


def with_changes(recipe: Recipe, changes: dict[str, Any]) -> Recipe:
    """A copy of the recipe with dotted keys changed (``grpo.extra.x`` sets a key of the extra mapping), as an
    override would: the keys are set in its tree (``recipe._set_path``), which is built and validated again as
    ``load_recipe`` does."""
    tree = recipe.to_dict()
    for dotted, value in changes.items():
        _set_path(tree, dotted, value)
    changed = _build(Recipe, tree)
    validate(changed)
    return changed


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
        _, gc = resolve_flags(s.precision, s.gradient_checkpointing, target.gpu)
        if stage == "grpo" and s.backend == "vllm" and s.vllm_mode == "colocate" \
                and not s.extra.get("vllm_enable_sleep_mode"):
            out.append({"grpo.extra.vllm_enable_sleep_mode": True})
        if not gc:
            out.append({f"{stage}.gradient_checkpointing": True})
        optim = s.optim if stage == "sft" else str(s.extra.get("optim", "adamw_torch_fused"))
        if moment_bytes(optim) > 2:
            out.append({f"{stage}.optim" if stage == "sft" else "grpo.extra.optim": "paged_adamw_8bit"})
        b, a = s.per_device_train_batch_size, s.gradient_accumulation_steps
        while b > 1 and b % 2 == 0:
            b, a = b // 2, a * 2
            if stage == "grpo" and (b * a) % s.num_generations:
                break
            out.append({f"{stage}.per_device_train_batch_size": b, f"{stage}.gradient_accumulation_steps": a})
        if target.gpus > 1 and launch.shards != "weights" and not s.fsdp and Path(zero3).is_file():
            out.append({f"{stage}.deepspeed": zero3})
    elif stage == "eval":
        e = recipe.eval
        fit = plan.work.get("largest_batch_that_fits")
        if BACKENDS[e.backend].gpu_share is None:  # memory grows with the batch: auto, or an engine
            if e.generate_batch_size != "auto" and fit:
                out.append({"eval.generate_batch_size": "auto"})
            out += [{"eval.backend": name} for name, b in BACKENDS.items() if b.gpu_share is not None]
    return out


def find_fixes(recipe: Recipe, shape: ModelShape, target: Target, plan: StagePlan) -> list[str]:
    """The first single setting that makes the stage fit, else the shortest cumulative run of them."""
    planner = PLANNERS[plan.stage]

    def fits(changes: dict[str, Any]) -> StagePlan | None:
        try:
            p = planner(with_changes(recipe, changes), shape, target)
        except RecipeError:  # the change makes the recipe invalid: not a fix
            return None
        return p if p.fits else None

    cands = _candidates(recipe, plan.stage, target, plan)
    for c in cands:
        p = fits(c)
        if p is not None:
            return [", ".join(f"{k}={_fmt(v)}" for k, v in c.items()) + f" (-> {p.total_gib:.1f} GiB{_auto(p)})"]
    acc: dict[str, Any] = {}
    for c in cands:
        acc.update(c)
        p = fits(acc)
        if p is not None:
            return [", ".join(f"{k}={_fmt(v)}" for k, v in acc.items()) + f" together (-> {p.total_gib:.1f} GiB)"]
    return []


def _auto(p: StagePlan) -> str:
    return f", batch {p.work['auto_batch_size']}" if "auto_batch_size" in p.work else ""
