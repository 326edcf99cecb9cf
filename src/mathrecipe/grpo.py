"""Stage 2: GRPO with length-aware rewards, to cut solution length while keeping SFT's accuracy.

recipe -> data -> model (the selected SFT checkpoint, fp32 master weights) -> [length limits measured on dev] ->
GRPOTrainer(the method's rewards by name + the accuracy monitor) -> train (resumable; collapse guard; health per
step) -> save -> report section.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
from pathlib import Path
from typing import Any

from mathrecipe.checkpoints import CompleteMarker, checkpoint_step, last_complete_checkpoint
from mathrecipe.console import dataset_bars, trl_checkpointing_calls
from mathrecipe.data.io import DataError, check_system_prompt, load_table, require_columns, require_nonempty
from mathrecipe.files import atomic_write_json, replace_dir
from mathrecipe.hardware import has_cuda, precision_kwargs
from mathrecipe.health import CollapseGuard, HealthMonitor, last_safe_step
from mathrecipe.modeling import load_model_and_tokenizer, load_tokenizer, resolve_model
from mathrecipe.prompts import (
    build_messages,
    checked_prompt_ids,
    model_context,
)
from mathrecipe.recipe import GRPO_TO_TRL, GRPO_VLLM_TO_TRL, Recipe, trl_fields
from mathrecipe.rewards import Accuracy, RewardContext, build_reward, length_percentile

log = logging.getLogger(__name__)


def load_grpo_dataset(path: str | Path, system_prompt: str | None) -> Any:
    """GRPO rows: ``prompt`` (messages, or a problem string wrapped with the system prompt) and ``answer``."""
    ds = load_table(path, what="data.grpo_path")
    source = f"GRPO data {path}"
    require_columns(ds, ["prompt", "answer"], source)
    require_nonempty(ds, ["prompt", "answer"], source)
    if isinstance(ds[0]["prompt"], str):
        with dataset_bars(len(ds)):
            ds = ds.map(lambda r: {"prompt": build_messages(r["prompt"], system_prompt)})
    return ds


# ----------------------------------------------------------------------------------------------- rewards


class Monitor(Accuracy):
    """The zero-weight accuracy monitor (:class:`mathrecipe.rewards.Accuracy`), which under ``scale_rewards: batch``
    also logs the share of prompt groups whose weighted reward totals are all equal (``zero_std_groups_by_prompt``):
    TRL's ``frac_reward_zero_std`` there is whether the whole batch's std is 0. It re-scores the step with the
    training rewards (their answers are graded already: the grader caches verdicts)."""

    def __init__(self, totals: list[tuple[Any, float]] | None = None, group_size: int = 1) -> None:
        super().__init__()
        self.totals, self.group_size = totals or [], group_size

    def __call__(self, completions: Any, answer: Any = None, completion_ids: Any = None, **kw: Any) -> list[float]:
        out = super().__call__(completions, answer, completion_ids)
        log_metric = kw.get("log_metric")
        if self.totals and log_metric is not None:
            scores = [f(completions=completions, answer=answer, completion_ids=completion_ids, **kw)
                      for f, _ in self.totals]
            total = [sum(w * s[i] for (_, w), s in zip(self.totals, scores)) for i in range(len(completions))]
            log_metric("zero_std_groups_by_prompt", equal_groups(total, self.group_size))
        return out


def equal_groups(values: list[float], group_size: int) -> float:
    """The share of consecutive groups of ``group_size`` values that are all equal (within 1e-9): groups with no
    learning signal, as DAPO's dynamic sampling would drop them."""
    groups = [values[s:s + group_size] for s in range(0, len(values), group_size)]
    if not groups:
        return 0.0
    return sum(max(g) - min(g) <= 1e-9 for g in groups) / len(groups)


def build_rewards(recipe: Recipe, measured: dict[str, int] | None = None) -> tuple[list[Any], list[float]]:
    """The recipe's rewards by name (``recipe.rewards``, in its order) and their weights, then the zero-weight
    accuracy monitor unless ``accuracy`` is listed. ``measured``: limits resolved before training
    (:func:`measure_limits`)."""
    ctx = RewardContext(num_generations=recipe.grpo.num_generations, measured=measured or {})
    funcs = [build_reward(name, opts, ctx) for name, opts in recipe.rewards.items()]
    weights = reward_weights(recipe)
    if "accuracy" not in recipe.rewards:
        batch = recipe.grpo.scale_rewards == "batch"
        funcs.append(Monitor(list(zip(funcs, weights)) if batch else None, recipe.grpo.num_generations))
    return funcs, weights


def reward_weights(recipe: Recipe) -> list[float]:
    """TRL's ``reward_weights``: each listed reward's weight, and 0 for the accuracy monitor when it is added."""
    weights = [float(opts.weight) for opts in recipe.rewards.values()]
    return weights + ([] if "accuracy" in recipe.rewards else [0.0])


def accuracy_reward(funcs: list[Any]) -> Accuracy:
    """The accuracy reward among ``funcs``, found by name (the health monitor reads its per-step lengths)."""
    return next(f for f in funcs if getattr(f, "__name__", None) == "accuracy")


LIMITS_FILE = "mathrecipe_limits.json"  # in OUT/grpo: the limits measured before training (reused on resume)


def limits_to_measure(recipe: Recipe) -> dict[str, Any]:
    """{reward name: options} of the rewards whose length limit is null: set from the start model's lengths."""
    return {n: o for n, o in recipe.rewards.items() if hasattr(o, "percentile") and getattr(o, "limit", 0) is None}


def measure_limits(recipe: Recipe, model_path: str, dev: list[dict[str, Any]] | None, out: Path) -> dict[str, Any]:
    """Resolve each null ``limit`` to the ``percentile``-th percentile (:func:`length_percentile`) of the start
    model's own completion lengths on the dev problems, sampled with the recipe's ``eval`` settings. The result is
    saved in ``out/LIMITS_FILE`` (a resumed stage reuses it) and returned for the report: {name: {limit, unit,
    percentile, completions, mean, measured_on}}."""
    wanted = limits_to_measure(recipe)
    if not wanted:
        return {}
    f = out / LIMITS_FILE
    if f.is_file():
        saved = json.loads(f.read_text())
        if all(saved.get(n, {}).get("percentile") == o.percentile and saved[n].get("unit") == o.unit
               for n, o in wanted.items()):
            return saved
    if not dev:
        from mathrecipe.recipe import RecipeError

        raise RecipeError(f"rewards.{next(iter(wanted))}.limit is null (set from the start model's lengths on the dev "
                          "split), but this run has no dev problems: set data.dev_path (toy: data.toy.n_dev >= 1), "
                          "or give the limit")
    from mathrecipe.evaluate.inrun import evaluate_saved_model

    rows, _ = evaluate_saved_model(recipe, model_path, load_tokenizer(model_path, recipe.model), dev,
                                   desc="dev lengths")
    result = {}
    for name, o in wanted.items():
        lengths = [r["tokens"] if o.unit == "tokens" else len(r["completion"]) for r in rows]
        result[name] = {"limit": length_percentile(lengths, o.percentile), "unit": o.unit,
                        "percentile": o.percentile, "completions": len(lengths),
                        "mean": statistics.fmean(lengths), "measured_on": "dev", "model": model_path}
        log.info("GRPO: rewards.%s.limit = %d %s (the %gth percentile of the start model's %d dev completions)",
                 name, result[name]["limit"], o.unit, o.percentile, len(lengths))
    from accelerate import PartialState

    if PartialState().is_main_process:
        atomic_write_json(f, result)
    return result


# ------------------------------------------------------------------------------------------------ config



def grpo_args(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Keyword arguments for ``trl.GRPOConfig`` (``grpo.extra`` cannot override the recipe: see recipe.GRPO_OWNED)."""
    g = recipe.grpo
    gc = g.gradient_checkpointing
    if gc is None and has_cuda():
        from mathrecipe.plan import checkpointing_needed

        gc = checkpointing_needed(recipe, "grpo")
    prec = precision_kwargs(g.precision, gc)
    check_backend_precision(recipe)
    kwargs: dict[str, Any] = dict(
        **trl_fields(recipe, GRPO_TO_TRL), output_dir=str(out), reward_weights=reward_weights(recipe),
        save_strategy="steps" if g.save_steps else "no", save_steps=g.save_steps or 500, **prec,
    )
    if g.backend == "vllm":
        kwargs.update(use_vllm=True, **trl_fields(recipe, GRPO_VLLM_TO_TRL))
    elif g.backend == "paged":
        kwargs["use_transformers_continuous_batching"] = True
    elif not has_cuda() and _static_cache_fits(recipe):
        kwargs["cache_implementation"] = "static"
    if prec["bf16"] or prec["fp16"]:
        # the reference model is never trained: half precision halves its memory (the policy keeps fp32 masters)
        kwargs["model_init_kwargs"] = {"dtype": "bfloat16" if prec["bf16"] else "float16"}
    if g.fsdp:
        kwargs.update(fsdp="full_shard auto_wrap", fsdp_config=g.fsdp)
    return {**kwargs, **g.extra}


def _static_cache_fits(recipe: Recipe) -> bool:
    """CPU rollouts use a preallocated KV cache (no per-token torch.cat; 1.64x faster generation at full length on
    the toy, equal at the ~45 tokens a trained toy policy writes: bench/results/toy_experiments.md) when the full
    cache, grpo.per_device_train_batch_size x (prompt allowance + max_completion_length) tokens in fp32, fits the CPU
    KV-cache memory (:mod:`mathrecipe.memory`). A model whose shape is unknown without a download keeps the growing cache."""
    from mathrecipe.memory import CPU_KV_CACHE_GIB, PROMPT_TOKENS, static_cache_fits
    from mathrecipe.plan import resolve_shape
    from mathrecipe.recipe import RecipeError

    try:
        shape = resolve_shape(recipe)
    except RecipeError:
        return False
    g = recipe.grpo
    return static_cache_fits(shape, 4, g.per_device_train_batch_size, PROMPT_TOKENS + g.max_completion_length,
                             CPU_KV_CACHE_GIB)


# ------------------------------------------------------------------------------------------------- stage


def check_backend_precision(recipe: Recipe) -> None:
    """Refuse ``grpo.backend=paged`` where TRL would drop the fp32 master weights.

    TRL 1.16's continuous-batching rollout (``use_transformers_continuous_batching``) calls
    ``unwrapped_model.to(bfloat16)`` (or float16) before every generation when bf16/fp16 is on, and never casts
    back: after the first step the policy trains in pure half precision, where small updates vanish (see
    :mod:`mathrecipe.modeling`). With fp32 compute (CPU, or ``grpo.precision=fp32``) it casts nothing.
    """
    from mathrecipe.recipe import RecipeError

    g = recipe.grpo
    if g.backend != "paged":
        return
    prec = precision_kwargs(g.precision, g.gradient_checkpointing)
    if prec["bf16"] or prec["fp16"]:
        half = "bf16" if prec["bf16"] else "fp16"
        raise RecipeError(
            f"grpo.backend=paged with {half} compute (grpo.precision={g.precision}): TRL 1.16's continuous batching "
            f"casts the policy to {half} before every rollout and never back, so its fp32 master weights would be "
            "lost after one step; use grpo.backend=hf (or vllm), or grpo.precision=fp32")


def check_prompt_lengths(dataset: Any, tokenizer: Any, config: Any, max_completion_length: int, source: str) -> None:
    """Refuse GRPO prompts with no room to answer: prompt tokens (through the chat template, as TRL renders them)
    + ``grpo.max_completion_length`` > the model's context. TRL 1.16 neither cuts nor skips such a prompt: its
    rollouts run past the model's positions (garbage, or out of memory)."""
    context = model_context(config)
    if context is not None:
        prompts = dataset["prompt"]
        checked_prompt_ids(tokenizer, prompts, range(1, len(prompts) + 1), None, max_completion_length, context,
                           f"{source} (max_new_tokens = grpo.max_completion_length)",
                           "drop or shorten those rows, or lower grpo.max_completion_length", error=DataError)


def check_grpo_data(recipe: Recipe, data_path: str | Path, model_path: str) -> Any:
    """The GRPO rows, checked before any weights load: columns, non-empty fields, the system prompt they were built
    with, and every prompt's length against the start model's context. Returns the dataset."""
    from transformers import AutoConfig

    check_system_prompt(data_path, recipe.data.system_prompt, "GRPO data (data.grpo_path)")
    dataset = load_grpo_dataset(data_path, recipe.data.system_prompt)
    path = resolve_model(model_path, "model.name_or_path")
    config = AutoConfig.from_pretrained(path, trust_remote_code=recipe.model.trust_remote_code)
    check_prompt_lengths(dataset, load_tokenizer(path, recipe.model), config, recipe.grpo.max_completion_length,
                         f"GRPO data {data_path}")
    return dataset


def _copy_model_files(ckpt: Path, dest: Path) -> None:
    """The model, config and tokenizer files of a checkpoint (not its optimizer, scheduler or RNG state)."""
    skip = ("optimizer", "scheduler", "rng_state", "trainer_state", "training_args", "mathrecipe_", "global_step",
            "DONE")
    dest.mkdir(parents=True, exist_ok=True)
    for f in ckpt.iterdir():
        if f.is_file() and not f.name.startswith(skip):
            shutil.copy2(f, dest / f.name)


def _save_start_model(model_path: str, dest: Path, recipe: Recipe) -> None:
    """The model GRPO started from, as an HF folder at ``dest`` (copied when local, else loaded and saved)."""
    if Path(model_path).is_dir():
        _copy_model_files(Path(model_path), dest)
        return
    model, tokenizer = load_model_and_tokenizer(model_path, recipe.model)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def run_grpo(recipe: Recipe, model_path: str, data_path: str | Path, out_dir: str | Path,
             dev: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train stage 2 from ``model_path`` (resuming from the last complete checkpoint in ``out_dir``, health
    included) and save the final policy to ``out_dir/final`` (atomically): after a collapse-guard trip, the newest
    policy outside the tripping KL window (a checkpoint, or the start model). ``dev``: the dev problems, on which
    a reward's null length limit is measured from the start model (:func:`measure_limits`)."""
    from accelerate import PartialState
    from trl import GRPOConfig, GRPOTrainer

    g = recipe.grpo
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = check_grpo_data(recipe, data_path, model_path)
    config = GRPOConfig(**grpo_args(recipe, out))
    limits = measure_limits(recipe, model_path, dev, out)
    rewards, _ = build_rewards(recipe, {name: m["limit"] for name, m in limits.items()})
    model, tokenizer = load_model_and_tokenizer(model_path, recipe.model, training=True)
    guard = CollapseGuard(g.max_kl if g.beta > 0 else None)
    health = HealthMonitor(recipe, accuracy_reward(rewards), guard)
    # health before CompleteMarker: a checkpoint is marked complete only once its health file is written
    with dataset_bars(len(dataset)):
        trainer = GRPOTrainer(model=model, args=config, reward_funcs=rewards, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[guard, health, CompleteMarker()])
    health.trainer = trainer
    resume = last_complete_checkpoint(out) if g.save_steps else None
    if resume is not None:
        log.info("GRPO: resuming from %s", resume)
        health.restore(resume)
    # a checkpoint at max_steps is the final policy: transformers' resume would fast-forward past its batches and
    # take one more before it checks max_steps (a run killed after its last save would train a step too many)
    finished = resume is not None and checkpoint_step(resume) >= g.max_steps
    if finished:
        from transformers import TrainerState

        log.info("GRPO: %s is at grpo.max_steps=%d; it is the final policy", resume, g.max_steps)
        trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
    else:
        with trl_checkpointing_calls():  # TRL's rollout helpers read transformers' deprecated names
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    health.finish()

    state = PartialState()
    final, tmp = out / "final", out / "final.tmp"
    stopped = guard.stopped
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    state.wait_for_everyone()
    if stopped is not None:
        safe = last_safe_step(stopped["window_start"])
        good = last_complete_checkpoint(out, before_step=safe) if safe >= 1 else None
        stopped["restored_step"] = checkpoint_step(good) if good is not None else 0
        stopped["restored"] = str(good) if good is not None else model_path
        if good is None and safe >= 1:
            stopped["note"] = (f"no complete checkpoint at or before step {safe} (grpo.save_steps="
                               f"{g.save_steps}): the saved policy is the start model")
        if state.is_main_process:
            if good is not None:
                _copy_model_files(good, tmp)
            else:
                _save_start_model(model_path, tmp, recipe)
    elif finished:
        if state.is_main_process:
            _copy_model_files(resume, tmp)
    else:
        trainer.save_model(str(tmp))  # every rank (DeepSpeed/FSDP gather their shards); saves the tokenizer too
    if state.is_main_process:
        replace_dir(tmp, final)
    state.wait_for_everyone()
    steps = trainer.state.global_step
    return {
        "steps": steps,
        "checkpoint": str(final),
        "start_model": model_path,
        "stopped_early": stopped,
        "stopped_by_alarm": health.stopped_by,
        "log": [h for h in trainer.state.log_history if "step" in h],
        "health": {"steps": health.steps, "alarms": list(health.alarms.values()), "judged": health.judged(steps)},
        "train_rows": len(dataset),
        **({"limits": limits} if limits else {}),
        "resumed_from": str(resume) if resume else None,
        "on_gpu": has_cuda(),
    }
