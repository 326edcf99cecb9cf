"""Stage 2: GRPO with length-aware rewards, to cut solution length while keeping SFT's accuracy.

recipe -> data -> tokenizer/model (the selected SFT checkpoint) -> GRPOTrainer(format, cosine, length) -> train
(with a collapse guard) -> save -> evaluate -> report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mathrecipe.data.io import load_table, require_columns, require_nonempty
from mathrecipe.hardware import precision_kwargs
from mathrecipe.modeling import load_model_and_tokenizer
from mathrecipe.prompts import build_messages
from mathrecipe.recipe import Recipe
from mathrecipe.rewards import CosineReward, LengthPenalty, format_reward

log = logging.getLogger(__name__)


def load_grpo_dataset(path: str | Path, system_prompt: str | None) -> Any:
    """GRPO rows: ``prompt`` (messages, or a problem string wrapped with the system prompt) and ``answer``."""
    ds = load_table(path)
    source = f"GRPO data {path}"
    require_columns(ds, ["prompt", "answer"], source)
    require_nonempty(ds, ["prompt", "answer"], source)
    if isinstance(ds[0]["prompt"], str):
        ds = ds.map(lambda r: {"prompt": build_messages(r["prompt"], system_prompt)})
    return ds


def build_rewards(recipe: Recipe) -> tuple[list[Any], list[float]]:
    """The three reward functions and their weights, from the recipe."""
    r, c = recipe.rewards, recipe.rewards.cosine
    funcs = [
        format_reward,
        CosineReward(max_len=c.max_len, unit=c.unit, min_value_correct=c.min_value_correct,
                     max_value_correct=c.max_value_correct, min_value_wrong=c.min_value_wrong,
                     max_value_wrong=c.max_value_wrong),
        LengthPenalty(group_size=recipe.grpo.num_generations, unit=r.length.unit),
    ]
    return funcs, [r.format_weight, r.cosine_weight, r.length_weight]


class CollapseGuard(TrainerCallback):
    """Stops training when the logged KL to the reference passes ``max_kl``.

    The paper's GRPO collapsed past ~60 steps and its authors picked an early checkpoint by hand; on the toy task a
    too-high learning rate cut length but collapsed accuracy with KL peaking at 0.8. Stopping keeps the last good
    policy and says why in the report.
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
            self.stopped = {"step": state.global_step, "reason": f"kl {kl:.3f} > grpo.max_kl {self.max_kl}"}
            log.warning("GRPO collapse guard: %s at step %d; stopping", self.stopped["reason"], state.global_step)
            control.should_training_stop = True


def run_grpo(recipe: Recipe, model_path: str, data_path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Train stage 2 from ``model_path`` and save the final policy to ``out_dir/final``."""
    from trl import GRPOConfig, GRPOTrainer

    g = recipe.grpo
    out = Path(out_dir)
    rewards, weights = build_rewards(recipe)
    config = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=g.batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps,
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        max_steps=g.max_steps,
        learning_rate=g.learning_rate,
        lr_scheduler_type=g.lr_scheduler,
        warmup_steps=g.warmup_steps,
        beta=g.beta,
        epsilon=g.epsilon,
        temperature=g.temperature,
        top_p=g.top_p,
        min_p=g.min_p,
        reward_weights=weights,
        use_vllm=g.backend == "vllm",
        logging_steps=g.logging_steps,
        save_strategy="steps" if g.save_steps else "no",
        save_steps=g.save_steps or 500,
        report_to="none",
        seed=recipe.seed,
        deepspeed=g.deepspeed,
        **precision_kwargs(g.precision, g.gradient_checkpointing),
        **g.extra,
    )
    dataset = load_grpo_dataset(data_path, recipe.data.system_prompt)
    model, tokenizer = load_model_and_tokenizer(model_path, recipe.model)
    guard = CollapseGuard(g.max_kl)
    trainer = GRPOTrainer(model=model, args=config, reward_funcs=rewards, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[guard])
    trainer.train()
    final = out / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    return {
        "steps": trainer.state.global_step,
        "checkpoint": str(final),
        "stopped_early": guard.stopped,
        "log": guard.history,
        "train_rows": len(dataset),
    }
