"""Stage 1: long full-parameter SFT with completion-only loss, and a held-out evaluation after every epoch.

recipe -> data -> tokenizer/model -> SFTTrainer -> train (checkpoint + eval each epoch) -> select epoch -> report.

The paper trains ~10 epochs: accuracy dips or stays flat early, then breaks through; the per-epoch table shows it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mathrecipe.data.io import DataError, load_table, require_columns, write_jsonl
from mathrecipe.evaluate.harness import evaluate_for_recipe
from mathrecipe.hardware import precision_kwargs
from mathrecipe.modeling import load_model_and_tokenizer
from mathrecipe.recipe import Recipe

log = logging.getLogger(__name__)


def load_sft_dataset(path: str | Path) -> Any:
    """SFT rows as TRL conversational prompt-completion (loss on the completion only).

    Accepts ``prompt``/``completion`` message lists, or ``messages`` (system/user/assistant) whose last turn is the
    assistant's: it becomes the completion.
    """
    ds = load_table(path)
    if "prompt" in ds.column_names and "completion" in ds.column_names:
        return ds.select_columns(["prompt", "completion"])
    require_columns(ds, ["messages"], f"SFT data {path}")

    def split(row: dict[str, Any], idx: int) -> dict[str, Any]:
        msgs = row["messages"]
        if not msgs or msgs[-1].get("role") != "assistant":
            raise DataError(f"SFT data {path}, row {idx + 1}: column 'messages' must end with an assistant turn")
        return {"prompt": msgs[:-1], "completion": msgs[-1:]}

    return ds.map(split, with_indices=True, remove_columns=ds.column_names)


class EpochEval(TrainerCallback):
    """After every epoch, evaluate on the held-out problems and remember the checkpoint."""

    def __init__(self, recipe: Recipe, tokenizer: Any, problems: list[dict[str, Any]]) -> None:
        self.recipe, self.tokenizer, self.problems = recipe, tokenizer, problems
        self.epochs: list[dict[str, Any]] = []
        self._step_to_epoch: dict[int, int] = {}

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        epoch = int(round(state.epoch))
        self._step_to_epoch[state.global_step] = epoch
        row: dict[str, Any] = {"epoch": epoch, "step": state.global_step}
        if self.recipe.sft.eval_each_epoch and state.is_world_process_zero:
            rows, summary = evaluate_for_recipe(self.recipe, model, self.tokenizer, self.problems,
                                                desc=f"eval epoch {epoch}")
            row.update(accuracy=summary["accuracy"], mean_tokens=summary["mean_tokens"],
                       mean_tokens_correct=summary["mean_tokens_correct"],
                       truncation_rate=summary["truncation_rate"])
            write_jsonl(rows, Path(args.output_dir) / f"eval-epoch{epoch}.samples.jsonl")
            log.info("SFT epoch %d: accuracy %.3f, mean tokens %.1f", epoch, summary["accuracy"], summary["mean_tokens"])
        self.epochs.append(row)

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        epoch = self._step_to_epoch.get(state.global_step)
        ckpt = str(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        for row in self.epochs:
            if row["epoch"] == epoch:
                row["checkpoint"] = ckpt


def select_epoch(epochs: list[dict[str, Any]], how: str) -> dict[str, Any]:
    """The epoch GRPO starts from: the last, or the best held-out accuracy (the earliest among ties)."""
    if not epochs:
        raise ValueError("SFT produced no epochs")
    if how == "last":
        return epochs[-1]
    scored = [e for e in epochs if "accuracy" in e]
    if not scored:
        raise ValueError("sft.select=best needs sft.eval_each_epoch=true (no epoch was evaluated)")
    return max(scored, key=lambda e: (e["accuracy"], -e["epoch"]))


def run_sft(recipe: Recipe, model_path: str, data_path: str | Path, problems: list[dict[str, Any]],
            out_dir: str | Path) -> dict[str, Any]:
    """Train stage 1 and return its report section: per-epoch rows, the selected epoch and its checkpoint."""
    from trl import SFTConfig, SFTTrainer

    s = recipe.sft
    out = Path(out_dir)
    config = SFTConfig(
        output_dir=str(out),
        num_train_epochs=s.epochs,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler,
        warmup_steps=s.warmup_steps,
        weight_decay=s.weight_decay,
        max_length=s.max_length,
        packing=s.packing,
        completion_only_loss=True,
        optim=s.optim,
        save_strategy="epoch",
        save_only_model=s.save_only_model,
        logging_steps=s.logging_steps,
        report_to="none",
        seed=recipe.seed,
        deepspeed=s.deepspeed,
        disable_tqdm=False,
        **precision_kwargs(s.precision, s.gradient_checkpointing),
        **s.extra,
    )
    dataset = load_sft_dataset(data_path)
    model, tokenizer = load_model_and_tokenizer(model_path, recipe.model)
    epoch_eval = EpochEval(recipe, tokenizer, problems)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[epoch_eval])
    trainer.train()
    chosen = select_epoch(epoch_eval.epochs, s.select)
    if "checkpoint" not in chosen:
        raise RuntimeError(f"SFT epoch {chosen['epoch']} has no saved checkpoint under {out}")
    return {
        "epochs": epoch_eval.epochs,
        "selected_epoch": chosen["epoch"],
        "selected_checkpoint": chosen["checkpoint"],
        "train_rows": len(dataset),
        "steps": trainer.state.global_step,
    }
