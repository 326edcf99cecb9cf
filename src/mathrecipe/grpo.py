"""Stage 2: GRPO with length-aware rewards, to cut solution length while keeping SFT's accuracy.

recipe -> data -> model (the selected SFT checkpoint, fp32 master weights) -> GRPOTrainer(format, cosine, length) ->
train (resumable; collapse guard; health per step) -> save -> report section.
"""

from __future__ import annotations

import logging
import shutil
import statistics
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mathrecipe.checkpoints import CompleteMarker, checkpoint_step, last_complete_checkpoint
from mathrecipe.data.io import check_system_prompt, load_table, require_columns, require_nonempty
from mathrecipe.files import replace_dir
from mathrecipe.grading import Grader, default_grader
from mathrecipe.hardware import has_cuda, precision_kwargs
from mathrecipe.modeling import load_model_and_tokenizer
from mathrecipe.prompts import build_messages
from mathrecipe.recipe import Recipe
from mathrecipe.rewards import CosineReward, LengthPenalty, completion_text, format_reward

log = logging.getLogger(__name__)


def load_grpo_dataset(path: str | Path, system_prompt: str | None) -> Any:
    """GRPO rows: ``prompt`` (messages, or a problem string wrapped with the system prompt) and ``answer``."""
    ds = load_table(path, what="data.grpo_path")
    source = f"GRPO data {path}"
    require_columns(ds, ["prompt", "answer"], source)
    require_nonempty(ds, ["prompt", "answer"], source)
    if isinstance(ds[0]["prompt"], str):
        ds = ds.map(lambda r: {"prompt": build_messages(r["prompt"], system_prompt)})
    return ds


# ----------------------------------------------------------------------------------------------- rewards


class Accuracy:
    """A zero-weight reward: 1.0 for a correct final answer. It changes nothing in training; TRL logs its mean per
    step (``rewards/accuracy/mean``), which the health checks compare with the format reward. It also keeps each
    step's completion lengths for the 95th percentile (TRL logs mean/min/max only)."""

    __name__ = "accuracy"

    def __init__(self, grader: Grader | None = None) -> None:
        self.grader = grader
        self.lengths: list[int] = []

    def __call__(self, completions: Any, answer: Any = None, completion_ids: Any = None, **kw: Any) -> list[float]:
        g = self.grader or default_grader()
        results = g.grade([completion_text(c) for c in completions], [str(a) for a in answer])
        if completion_ids is not None:
            self.lengths.extend(len(ids) for ids in completion_ids)
        return [1.0 if r.correct else 0.0 for r in results]


def build_rewards(recipe: Recipe) -> tuple[list[Any], list[float]]:
    """The three reward functions and their weights from the recipe, then the zero-weight accuracy monitor."""
    r, c = recipe.rewards, recipe.rewards.cosine
    funcs = [
        format_reward,
        CosineReward(max_len=c.max_len, unit=c.unit, min_value_correct=c.min_value_correct,
                     max_value_correct=c.max_value_correct, min_value_wrong=c.min_value_wrong,
                     max_value_wrong=c.max_value_wrong),
        LengthPenalty(group_size=recipe.grpo.num_generations, unit=r.length.unit),
        Accuracy(),
    ]
    return funcs, [r.format_weight, r.cosine_weight, r.length_weight, 0.0]


# ------------------------------------------------------------------------------------------------ config



def grpo_args(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Keyword arguments for ``trl.GRPOConfig`` (``grpo.extra`` cannot override the recipe: see recipe.GRPO_OWNED)."""
    g = recipe.grpo
    _, weights = build_rewards(recipe)
    gc = g.gradient_checkpointing
    if gc is None and has_cuda():
        from mathrecipe.plan import checkpointing_needed

        gc = checkpointing_needed(recipe, "grpo")
    prec = precision_kwargs(g.precision, gc)
    kwargs: dict[str, Any] = dict(
        output_dir=str(out), per_device_train_batch_size=g.batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps, num_generations=g.num_generations,
        max_completion_length=g.max_completion_length, max_steps=g.max_steps, learning_rate=g.learning_rate,
        lr_scheduler_type=g.lr_scheduler, warmup_steps=g.warmup_steps, beta=g.beta, epsilon=g.epsilon,
        temperature=g.temperature, top_p=g.top_p, min_p=g.min_p, loss_type=g.loss_type,
        scale_rewards=g.scale_rewards, mask_truncated_completions=g.mask_truncated_completions,
        reward_weights=weights, logging_steps=g.logging_steps,
        save_strategy="steps" if g.save_steps else "no", save_steps=g.save_steps or 500,
        report_to=recipe.report_to, seed=recipe.seed, deepspeed=g.deepspeed, **prec,
    )
    if g.backend == "vllm":
        kwargs.update(use_vllm=True, vllm_mode=g.vllm_mode, vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization,
                      vllm_importance_sampling_correction=g.vllm_importance_sampling_correction)
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


ROLLOUT_PROMPT_TOKENS = 1024  # prompt allowance when sizing a rollout cache (the recipe does not bound prompts)


def _static_cache_fits(recipe: Recipe) -> bool:
    """CPU rollouts use a preallocated KV cache (no per-token torch.cat; 1.64x faster generation at full length on
    the toy, equal at the ~45 tokens a trained toy policy writes: bench/results/toy_experiments.md) when the full
    cache, grpo.batch_size x (prompt allowance + max_completion_length) tokens in fp32, fits the CPU KV budget. A
    model whose shape is unknown without a download keeps the growing cache."""
    from mathrecipe.evaluate.generation import CPU_KV_CACHE_GIB
    from mathrecipe.plan import resolve_shape
    from mathrecipe.recipe import RecipeError

    try:
        shape = resolve_shape(recipe)
    except RecipeError:
        return False
    g = recipe.grpo
    need = g.batch_size * (ROLLOUT_PROMPT_TOKENS + g.max_completion_length) * shape.kv_bytes_per_token(4)
    return need <= CPU_KV_CACHE_GIB * 2**30


# --------------------------------------------------------------------------------------------- callbacks


class CollapseGuard(TrainerCallback):
    """Stops training when the logged KL to the reference passes ``max_kl``.

    The paper's GRPO collapsed past ~60 steps and its authors picked an early checkpoint by hand; on the toy task a
    too-high learning rate cut length but collapsed accuracy with KL peaking at 0.8. The logged KL is an average over
    the last ``logging_steps`` steps, so the last good policy is the last checkpoint saved before that window:
    :func:`run_grpo` restores it and the report names both steps.
    """

    def __init__(self, max_kl: float | None) -> None:
        self.max_kl = max_kl
        self.stopped: dict[str, Any] | None = None
        self.history: list[dict[str, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
        if not logs:
            return
        keep = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
        keep["step"] = state.global_step
        self.history.append(keep)
        kl = logs.get("kl")
        if self.max_kl is not None and kl is not None and kl > self.max_kl and self.stopped is None:
            window_start = max(0, state.global_step - args.logging_steps)
            self.stopped = {"step": state.global_step, "window_start": window_start,
                            "reason": f"kl {kl:.3f} > grpo.max_kl {self.max_kl}"}
            log.warning("GRPO collapse guard: %s at step %d; stopping", self.stopped["reason"], state.global_step)
            control.should_training_stop = True


HEALTH_KEYS = {  # TRL 1.16 metric -> our name
    "completions/mean_length": "mean_length", "completions/clipped_ratio": "truncation",
    "frac_reward_zero_std": "zero_std_groups", "kl": "kl", "entropy": "entropy", "reward": "reward",
}


class HealthMonitor(TrainerCallback):
    """Per GRPO step: mean and 95th-percentile completion length, truncation rate, each reward's mean, the share of
    zero-variance groups (no learning signal), KL and entropy; and the alarms of ``recipe.health``.

    Step values come from the trainer's own metric buffers (averaged over the step's micro-batches), so they exist
    for every step whatever ``logging_steps`` is.
    """

    def __init__(self, recipe: Recipe, accuracy: Accuracy) -> None:
        self.h, self.max_kl, self.accuracy = recipe.health, recipe.grpo.max_kl, accuracy
        self.trainer: Any = None
        self.steps: list[dict[str, float]] = []
        self.alarms: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, int] = {}

    def on_log(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._seen = {}  # the trainer empties its buffers right after logging

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        buffers = getattr(self.trainer, "_metrics", {}).get("train", {}) if self.trainer is not None else {}
        row: dict[str, float] = {"step": state.global_step}
        for key, values in buffers.items():
            new = [v for v in values[self._seen.get(key, 0):] if v == v]  # drop NaN
            self._seen[key] = len(values)
            if not new:
                continue
            name = HEALTH_KEYS.get(key)
            if name is None and key.startswith("rewards/") and key.endswith("/mean"):
                name = "reward_" + key.split("/")[1]
            if name:
                row[name] = statistics.fmean(new)
        if self.accuracy.lengths:
            s = sorted(self.accuracy.lengths)
            row["p95_length"] = float(s[min(len(s) - 1, int(0.95 * len(s)))])
            self.accuracy.lengths.clear()
        self.steps.append(row)
        for alarm in self.check():
            if alarm["name"] not in self.alarms:
                self.alarms[alarm["name"]] = alarm
                log.warning("GRPO health alarm at step %d: %s", state.global_step, alarm["message"])
                if self.h.stop:
                    control.should_training_stop = True

    def _window(self, key: str) -> list[float]:
        return [r[key] for r in self.steps[-self.h.window:] if key in r]

    def check(self) -> list[dict[str, Any]]:
        """The alarms that hold now, judged over the last ``health.window`` steps."""
        out = []
        step = self.steps[-1]["step"] if self.steps else 0
        full = len(self.steps) >= self.h.window

        def alarm(name: str, value: float, threshold: float, message: str) -> None:
            out.append({"name": name, "step": step, "value": value, "threshold": threshold, "message": message})

        trunc = self._window("truncation")
        if full and trunc and statistics.fmean(trunc) > self.h.max_truncation:
            v = statistics.fmean(trunc)
            alarm("truncation", v, self.h.max_truncation,
                  f"{v:.0%} of completions hit grpo.max_completion_length (> health.max_truncation "
                  f"{self.h.max_truncation:.0%}): truncated completions get no correct-answer reward; raise "
                  "grpo.max_completion_length")
        zero = self._window("zero_std_groups")
        if full and zero and statistics.fmean(zero) > self.h.max_zero_std_groups:
            v = statistics.fmean(zero)
            alarm("zero_variance", v, self.h.max_zero_std_groups,
                  f"{v:.0%} of prompt groups have equal rewards (> health.max_zero_std_groups "
                  f"{self.h.max_zero_std_groups:.0%}): no learning signal; use harder/easier prompts or more "
                  "grpo.num_generations")
        fmt, acc = self._window("reward_format"), self._window("reward_accuracy")
        if full and len(fmt) == len(acc) == self.h.window:
            half = self.h.window // 2
            d_fmt = statistics.fmean(fmt[half:]) - statistics.fmean(fmt[:half])
            d_acc = statistics.fmean(acc[half:]) - statistics.fmean(acc[:half])
            if d_fmt > self.h.trend and d_acc < -self.h.trend:
                alarm("format_up_accuracy_down", d_acc, -self.h.trend,
                      f"format reward rose {d_fmt:+.2f} while accuracy fell {d_acc:+.2f} over {self.h.window} steps "
                      "(reward hacking: the policy learns the format, not the answers)")
        kls = [r["kl"] for r in self.steps if "kl" in r]
        if self.max_kl is not None and kls and kls[-1] > self.max_kl:
            alarm("kl", kls[-1], self.max_kl, f"KL {kls[-1]:.3f} > grpo.max_kl {self.max_kl}")
        ent = [r["entropy"] for r in self.steps if "entropy" in r]
        if len(ent) > self.h.window and ent[0] > 0:
            v = statistics.fmean(ent[-self.h.window:]) / ent[0]
            if v > self.h.max_entropy_growth:
                alarm("entropy", v, self.h.max_entropy_growth,
                      f"entropy grew {v:.1f}x since the first step (> health.max_entropy_growth): the policy is "
                      "drifting towards noise; lower grpo.learning_rate")
        return out


# ------------------------------------------------------------------------------------------------- stage


def _copy_model_files(ckpt: Path, dest: Path) -> None:
    """The model, config and tokenizer files of a checkpoint (not its optimizer, scheduler or RNG state)."""
    skip = ("optimizer", "scheduler", "rng_state", "trainer_state", "training_args", "mathrecipe_", "global_step")
    dest.mkdir(parents=True, exist_ok=True)
    for f in ckpt.iterdir():
        if f.is_file() and not f.name.startswith(skip):
            shutil.copy2(f, dest / f.name)


def run_grpo(recipe: Recipe, model_path: str, data_path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Train stage 2 from ``model_path`` (resuming from the last complete checkpoint in ``out_dir``) and save the
    final policy to ``out_dir/final`` (atomically)."""
    from accelerate import PartialState
    from trl import GRPOConfig, GRPOTrainer

    g = recipe.grpo
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_system_prompt(data_path, recipe.data.system_prompt, "GRPO data (data.grpo_path)")
    rewards, _ = build_rewards(recipe)
    config = GRPOConfig(**grpo_args(recipe, out))
    dataset = load_grpo_dataset(data_path, recipe.data.system_prompt)
    model, tokenizer = load_model_and_tokenizer(model_path, recipe.model, training=True)
    guard = CollapseGuard(g.max_kl if g.beta > 0 else None)
    health = HealthMonitor(recipe, rewards[-1])
    trainer = GRPOTrainer(model=model, args=config, reward_funcs=rewards, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[guard, health, CompleteMarker()])
    health.trainer = trainer
    resume = last_complete_checkpoint(out) if g.save_steps else None
    if resume is not None:
        log.info("GRPO: resuming from %s", resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    state = PartialState()
    final, tmp = out / "final", out / "final.tmp"
    restored = None
    if guard.stopped is not None:
        good = last_complete_checkpoint(out, before_step=guard.stopped["window_start"])
        if good is not None:
            restored = checkpoint_step(good)
            if state.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
                _copy_model_files(good, tmp)
                replace_dir(tmp, final)
            guard.stopped["restored_step"] = restored
        else:
            guard.stopped["restored_step"] = None
            guard.stopped["note"] = ("no checkpoint before the trip to restore (set grpo.save_steps): the saved policy "
                                     "is the one at the trip step")
    if restored is None:
        if state.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        state.wait_for_everyone()
        trainer.save_model(str(tmp))  # every rank (DeepSpeed/FSDP gather their shards); saves the tokenizer too
        if state.is_main_process:
            replace_dir(tmp, final)
    state.wait_for_everyone()
    return {
        "steps": trainer.state.global_step,
        "checkpoint": str(final),
        "stopped_early": guard.stopped,
        "log": guard.history,
        "health": {"steps": health.steps, "alarms": list(health.alarms.values())},
        "train_rows": len(dataset),
        "resumed_from": str(resume) if resume else None,
        "on_gpu": has_cuda(),
    }
