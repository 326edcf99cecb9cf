"""Stage 1: long full-parameter SFT on the whole assistant turn, and an evaluation on the test problems after every
epoch.

recipe -> data (tokenised here: prompt ids as GRPO/eval see them, then trace + end-of-turn) -> model (fp32 master
weights) -> SFTTrainer -> train (checkpoint + eval each epoch; resumable) -> select epoch -> report section.

The paper trains ~10 epochs: accuracy dips or stays flat early, then breaks through; the per-epoch table shows it.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mathrecipe.checkpoints import CompleteMarker, last_complete_checkpoint
from mathrecipe.console import dataset_bars
from mathrecipe.data.io import DataError, check_system_prompt, load_table, require_columns, write_jsonl
from mathrecipe.errors import MathRecipeError
from mathrecipe.evaluate.inrun import evaluate_for_recipe
from mathrecipe.files import read_jsonl_rows
from mathrecipe.hardware import has_cuda, liger_supported, precision_kwargs
from mathrecipe.modeling import load_model_and_tokenizer
from mathrecipe.prompts import sft_tokens, turn_format
from mathrecipe.recipe import SFT_TO_TRL, Recipe, trl_fields

log = logging.getLogger(__name__)
EPOCHS_FILE = "epochs.jsonl"  # one row per evaluated epoch, appended as training goes (survives a kill)


# ------------------------------------------------------------------------------------------------- data


def load_sft_dataset(path: str | Path) -> Any:
    """SFT rows as ``prompt`` (system/user messages) and ``completion`` (the assistant's trace, a string).

    Accepts ``messages`` whose last turn is the assistant's, or ``prompt``/``completion`` (message lists or strings).
    """
    ds = load_table(path, what="data.sft_path")
    source = f"SFT data {path}"
    if "prompt" in ds.column_names and "completion" in ds.column_names:
        def pc(row: dict[str, Any], idx: int) -> dict[str, Any]:
            prompt, completion = row["prompt"], row["completion"]
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            if isinstance(completion, list):
                completion = "".join(m.get("content") or "" for m in completion if m.get("role") == "assistant")
            if not prompt or not isinstance(completion, str) or not completion.strip():
                raise DataError(f"{source}, row {idx + 1}: empty prompt or completion")
            return {"prompt": prompt, "completion": completion}

        with dataset_bars(len(ds)):
            return ds.map(pc, with_indices=True, remove_columns=ds.column_names)
    require_columns(ds, ["messages"], source)

    def split(row: dict[str, Any], idx: int) -> dict[str, Any]:
        msgs = row["messages"]
        if not msgs or msgs[-1].get("role") != "assistant" or not (msgs[-1].get("content") or "").strip():
            raise DataError(f"{source}, row {idx + 1}: column 'messages' must end with a non-empty assistant turn")
        return {"prompt": msgs[:-1], "completion": msgs[-1]["content"]}

    with dataset_bars(len(ds)):
        return ds.map(split, with_indices=True, remove_columns=ds.column_names)


def tokenize_sft(ds: Any, tokenizer: Any, num_proc: int | None = None) -> Any:
    """``input_ids`` + ``completion_mask`` per row (see :func:`mathrecipe.prompts.sft_tokens`); TRL trains on the
    tokens whose mask is 1 and does not re-tokenise (a dataset with ``input_ids`` is taken as prepared)."""
    fmt = turn_format(tokenizer)

    def fn(batch: dict[str, list]) -> dict[str, list]:
        rows = [sft_tokens(tokenizer, p, c, fmt) for p, c in zip(batch["prompt"], batch["completion"])]
        return {"input_ids": [r["input_ids"] for r in rows], "completion_mask": [r["completion_mask"] for r in rows]}

    with dataset_bars(len(ds)):
        return ds.map(fn, batched=True, remove_columns=ds.column_names, num_proc=num_proc, desc="tokenise SFT rows")


def check_lengths(tokenized: Any, max_length: int | None, path: str | Path, packing_strategy: str | None = None) -> None:
    """Refuse rows longer than ``sft.max_length``: TRL would cut them and lose the answer and the end token.

    Only ``wrapped`` packing (the paper's: concatenate every row, cut fixed blocks) passes them: it drops no token, and
    cutting rows at block edges is what it does to every row anyway. No packing and ``bfd`` (TRL's default) truncate
    a long row; ``bfd_split`` keeps its tail but packs it as a document of its own (its own ``seq_lengths`` entry,
    positions from 0, attention only within it), so the model would learn to write the answer and the end token
    without seeing the problem (recipe.validate refuses it before this)."""
    if max_length is None or packing_strategy == "wrapped":
        return
    lengths = [len(x) for x in tokenized["input_ids"]]
    over = [n for n in lengths if n > max_length]
    if over:
        raise DataError(
            f"SFT data {path}: {len(over)} of {len(lengths)} rows are longer than sft.max_length={max_length} tokens "
            f"(longest {max(over)}); training would cut off their answer and end token. Raise sft.max_length, or "
            "drop them when building the data (data.build.max_tokens)"
        )


# ------------------------------------------------------------------------------------------------ config



def sft_args(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Keyword arguments for ``trl.SFTConfig`` (``sft.extra`` cannot override the recipe: see recipe.SFT_OWNED)."""
    s = recipe.sft
    gc = s.gradient_checkpointing
    if gc is None and has_cuda():
        from mathrecipe.plan import checkpointing_needed

        gc = checkpointing_needed(recipe, "sft")
    kwargs: dict[str, Any] = dict(
        **trl_fields(recipe, SFT_TO_TRL), output_dir=str(out), completion_only_loss=True,
        save_strategy="steps" if s.save_steps else "epoch", disable_tqdm=False, **precision_kwargs(s.precision, gc),
    )
    liger = s.use_liger_kernel
    if liger is None:  # reads the model's config only on a GPU (never a hub lookup on CPU)
        liger = has_cuda() and liger_supported(_model_type(recipe))
    if liger:
        kwargs["use_liger_kernel"] = True
    if s.save_steps:
        kwargs["save_steps"] = s.save_steps
    if s.fsdp:
        kwargs.update(fsdp="full_shard auto_wrap", fsdp_config=s.fsdp)
    return {**kwargs, **s.extra}


def _model_type(recipe: Recipe) -> str | None:
    """The model's ``model_type`` from its config (toy: llama), without loading weights."""
    name = recipe.model.name_or_path
    if name == "toy":
        return "llama"
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(name, trust_remote_code=recipe.model.trust_remote_code).model_type
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------- callbacks


class ContinueSchedule(TrainerCallback):
    """Resume the learning-rate schedule where it stopped when the checkpoint holds no scheduler state.

    A weights-only checkpoint (``sft.save_only_model``) has no ``scheduler.pt``: transformers' resume then loads the
    weights and the trainer state (global step S, data position) but keeps the fresh scheduler it just built, at step
    0, so step S+1 would train at lr(0) and the whole schedule would run again. A fresh scheduler (``last_epoch``
    0) behind a resumed step S is stepped S times here, before the first update: step S+1 trains at lr(S), as in an
    uninterrupted run. A restored scheduler (full-state checkpoint) is already at S and is left alone.
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, lr_scheduler: Any = None, **kw: Any) -> None:
        import torch

        if (state.global_step > 0 and isinstance(lr_scheduler, torch.optim.lr_scheduler.LRScheduler)
                and not isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
                and lr_scheduler.last_epoch == 0):
            with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
                warnings.simplefilter("ignore")
                for _ in range(state.global_step):
                    lr_scheduler.step()
            log.info("SFT: weights-only checkpoint; learning-rate schedule continued at step %d", state.global_step)


def _epoch_end(state: Any) -> int | None:
    """The epoch that ends at the trainer's current step, or None mid-epoch: at an epoch's last update transformers
    sets ``state.epoch = e + steps_in_epoch / steps_in_epoch``, a whole number."""
    epoch = state.epoch
    if epoch is None or epoch < 1 or abs(epoch - round(epoch)) > 1e-6:
        return None
    return int(round(epoch))


class EpochEval(TrainerCallback):
    """After every epoch: make sure its checkpoint is saved, THEN evaluate on the test problems (and the dev
    problems when selecting the best epoch) and write the epoch's row to ``epochs.jsonl``.

    Save first, so a kill during the evaluation loses the evaluation only, not the epoch's training: the rerun
    resumes from that checkpoint and evaluates it before training on (``on_train_begin``). The row is written only
    once its checkpoint is complete, and ``epochs.jsonl`` is rewritten whole (atomically) from one row per epoch,
    so a failed save, a kill or a resume can never leave a duplicate or a row without its checkpoint.

    Must run after :class:`mathrecipe.checkpoints.CompleteMarker` (list it later in the callbacks): the row follows
    the marker. Every rank evaluates its share of the problems (rank-aware evaluation); rank 0 writes the files.
    """

    def __init__(self, recipe: Recipe, tokenizer: Any, problems: list[dict[str, Any]],
                 dev: list[dict[str, Any]] | None, out: Path) -> None:
        self.recipe, self.tokenizer, self.problems, self.dev, self.out = recipe, tokenizer, problems, dev, out
        self.epochs: dict[int, dict[str, Any]] = {r["epoch"]: r for r in read_jsonl_rows(out / EPOCHS_FILE)}
        self.pending: int | None = None  # the global step whose epoch waits for its checkpoint
        self.saved_step: int | None = None  # the step of the last checkpoint saved in this run

    def keep_rows_up_to(self, step: int | None, is_main: bool) -> None:
        """Drop rows of steps after ``step`` (None: all), left by an earlier attempt whose checkpoints did not
        survive, and rewrite the file so it never lists them."""
        self.epochs = {e: r for e, r in self.epochs.items() if step is not None and r["step"] <= step}
        if is_main:
            self._write()

    def _write(self) -> None:
        write_jsonl([self.epochs[e] for e in sorted(self.epochs)], self.out / EPOCHS_FILE)

    def _evaluate(self, state: Any, model: Any, epoch: int) -> None:
        row: dict[str, Any] = {"epoch": epoch, "step": state.global_step,
                               "checkpoint": str(self.out / f"checkpoint-{state.global_step}")}
        if self.recipe.sft.eval_each_epoch:
            rows, summary = evaluate_for_recipe(self.recipe, model, self.tokenizer, self.problems,
                                                desc=f"eval epoch {epoch}")
            row.update(accuracy=summary["accuracy"], mean_tokens=summary["mean_tokens"],
                       mean_tokens_correct=summary["mean_tokens_correct"],
                       truncation_rate=summary["truncation_rate"])
            if state.is_world_process_zero:
                write_jsonl(rows, self.out / f"eval-epoch{epoch}.samples.jsonl")
            if self.dev:
                _, dev_summary = evaluate_for_recipe(self.recipe, model, self.tokenizer, self.dev,
                                                     desc=f"dev epoch {epoch}")
                row["dev_accuracy"] = dev_summary["accuracy"]
            log.info("SFT epoch %d: accuracy %.3f, mean tokens %.1f", epoch, summary["accuracy"],
                     summary["mean_tokens"])
        self.epochs[epoch] = row
        if state.is_world_process_zero:
            self._write()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        # resumed from an epoch's checkpoint whose evaluation was interrupted: the model holds its weights now
        epoch = _epoch_end(state) if state.global_step > 0 else None
        if epoch is not None and epoch not in self.epochs:
            self._evaluate(state, model, epoch)

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        epoch = _epoch_end(state)
        if epoch is None:
            return
        if self.saved_step == state.global_step:  # save_steps already saved (and marked) this step's checkpoint
            self._evaluate(state, model, epoch)
        else:
            self.pending = state.global_step
            control.should_save = True  # one checkpoint per epoch, also when save_steps adds more

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.saved_step = state.global_step
        if self.pending == state.global_step:
            self.pending = None
            self._evaluate(state, model, _epoch_end(state) or int(round(state.epoch)))


def select_epoch(epochs: list[dict[str, Any]], how: str) -> dict[str, Any]:
    """The epoch GRPO starts from: the last, or the best DEV accuracy (the earliest among ties).

    The best epoch is chosen on development problems disjoint from the reported test problems: choosing on the
    reported problems would bias the reported number upward.
    """
    if not epochs:
        raise ValueError("SFT produced no epochs")
    if how == "last":
        return epochs[-1]
    scored = [e for e in epochs if e.get("dev_accuracy") is not None]
    if not scored:
        raise MathRecipeError("sft.select=best needs dev accuracy per epoch (sft.eval_each_epoch=true and dev "
                              "problems: data.dev_path, or data.toy.n_dev > 0)")
    return max(scored, key=lambda e: (e["dev_accuracy"], -e["epoch"]))


# ------------------------------------------------------------------------------------------------- stage


def run_sft(recipe: Recipe, model_path: str, data_path: str | Path, problems: list[dict[str, Any]],
            out_dir: str | Path, dev: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train stage 1 (resuming from the last complete checkpoint in ``out_dir``) and return its report section:
    per-epoch rows, the selected epoch and its checkpoint."""
    from trl import SFTConfig, SFTTrainer

    s = recipe.sft
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_system_prompt(data_path, recipe.data.system_prompt, "SFT data (data.sft_path)")
    config = SFTConfig(**sft_args(recipe, out))
    model, tokenizer = load_model_and_tokenizer(model_path, recipe.model, training=True)
    with config.main_process_first(desc="tokenise SFT data"):
        dataset = tokenize_sft(load_sft_dataset(data_path), tokenizer, config.dataset_num_proc)
    check_lengths(dataset, s.max_length, data_path, config.packing_strategy if s.packing else None)
    resume = last_complete_checkpoint(out)
    epoch_eval = EpochEval(recipe, tokenizer, problems, dev if s.select == "best" else None, out)
    done = json.loads((resume / "trainer_state.json").read_text())["global_step"] if resume else None
    # rows of an earlier attempt past the resume point (or all, starting afresh) belong to no checkpoint
    epoch_eval.keep_rows_up_to(done, config.process_index == 0)
    if resume is not None:
        log.info("SFT: resuming from %s", resume)
    # CompleteMarker before EpochEval: an epoch is evaluated only once its checkpoint is marked complete
    with dataset_bars(len(dataset)):  # TRL's label-building maps over the rows
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                             callbacks=[CompleteMarker(), epoch_eval, ContinueSchedule()])
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    epochs = [epoch_eval.epochs[e] for e in sorted(epoch_eval.epochs)]
    chosen = select_epoch(epochs, s.select)
    if not Path(chosen["checkpoint"]).is_dir():
        raise RuntimeError(f"SFT epoch {chosen['epoch']} has no saved checkpoint under {out}")
    return {
        "epochs": epochs,
        "selected_epoch": chosen["epoch"],
        "selected_checkpoint": chosen["checkpoint"],
        "selected_by": "last epoch" if s.select == "last" else "best dev accuracy",
        "train_rows": len(dataset),
        "steps": trainer.state.global_step,
        "resumed_from": str(resume) if resume else None,
    }
