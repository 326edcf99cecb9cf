"""SFT stage trust: the epoch rows, resume after a failed save or a kill during evaluation, the LR schedule of a
weights-only resume, and settings refused before compute (DeepSpeed + save_only_model, bfd_split packing).

The end-to-end tests run the real `mathrecipe run` path in-process on a tiny toy model; a "kill" is an exception
no code catches (like SIGKILL, it stops the run where it stands), a failed save an OSError raised by the trainer's
own checkpoint save (which the command reports in one line, exit status 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import tiny_run

from mathrecipe.checkpoints import COMPLETE_MARKER
from mathrecipe.cli import main

# 32 toy rows / batch 4 = 8 optimizer steps per epoch
TINY = tiny_run(32, 4, 8, 4, "sft.per_device_train_batch_size=4", "sft.logging_steps=1", "eval.samples=1",
                "eval.max_new_tokens=16", "grpo.enabled=false")
STEPS_PER_EPOCH = 8


class Killed(BaseException):
    """Stands for kill -9: nothing in the run catches it."""


def _run(out: Path, *overrides: str) -> int:
    return main(["-q", "run", f"output_dir={out}", *TINY, *overrides])


def _rows(out: Path) -> list[dict]:
    lines = (out / "sft" / "epochs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _fail_save_at(monkeypatch, step: int) -> None:
    """The trainer's checkpoint save at ``step`` writes its files, then fails (disk full) before the checkpoint is
    marked complete -- once; later saves work."""
    from transformers import Trainer

    real = Trainer._save_checkpoint
    failed = []

    def save(self, model, trial):
        real(self, model, trial)
        if self.state.global_step == step and not failed:
            failed.append(step)
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(Trainer, "_save_checkpoint", save)


def test_a_failed_checkpoint_save_then_a_resume_leaves_one_row_per_epoch(tmp_path, monkeypatch, capsys):
    """22.6: the save of epoch 2's checkpoint fails; the rerun resumes from epoch 1's and trains epoch 2 again.
    epochs.jsonl must hold each epoch once, each row naming a complete checkpoint (evaluated after the save)."""
    out = tmp_path / "run"
    _fail_save_at(monkeypatch, 2 * STEPS_PER_EPOCH)
    assert _run(out, "sft.epochs=3") == 2  # the command's one-line error for a full disk
    assert "no space left on device" in capsys.readouterr().err.lower()
    assert not (out / "sft" / f"checkpoint-{2 * STEPS_PER_EPOCH}" / COMPLETE_MARKER).exists()
    after_failure = [r["epoch"] for r in _rows(out)]
    monkeypatch.undo()
    assert _run(out, "sft.epochs=3") == 0
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert after_failure == [1]  # no row for epoch 2 while its checkpoint was not complete
    assert [r["step"] for r in rows] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH]
    assert all(Path(r["checkpoint"], COMPLETE_MARKER).is_file() and r["accuracy"] is not None for r in rows)
    report = json.loads((out / "report.json").read_text())
    assert report["resumed"]["sft"].endswith(f"checkpoint-{STEPS_PER_EPOCH}")
    assert [e["epoch"] for e in report["sft"]["epochs"]] == [1, 2, 3]


def test_a_kill_during_the_epoch_evaluation_keeps_the_epochs_training(tmp_path, monkeypatch):
    """22.6: the checkpoint is saved before the end-of-epoch evaluation, so a kill during that evaluation costs the
    evaluation only: the rerun resumes from the epoch's checkpoint (no step trained again) and evaluates it."""
    import mathrecipe.sft as sft

    out = tmp_path / "run"
    real = sft.evaluate_for_recipe

    def evaluate(*args, desc="", **kw):
        if desc == "eval epoch 2":
            raise Killed
        return real(*args, desc=desc, **kw)

    monkeypatch.setattr(sft, "evaluate_for_recipe", evaluate)
    with pytest.raises(Killed):
        _run(out, "sft.epochs=2")
    monkeypatch.undo()
    last = out / "sft" / f"checkpoint-{2 * STEPS_PER_EPOCH}"
    assert (last / COMPLETE_MARKER).is_file()  # epoch 2's training is on disk
    weights = (last / "model.safetensors").stat().st_mtime_ns
    assert _run(out, "sft.epochs=2") == 0
    assert (last / "model.safetensors").stat().st_mtime_ns == weights  # not trained (or saved) again
    report = json.loads((out / "report.json").read_text())
    assert report["resumed"]["sft"] == str(last)
    assert report["sft"]["steps"] == 2 * STEPS_PER_EPOCH
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["accuracy"] is not None for r in rows)
    assert (out / "sft" / "eval-epoch2.samples.jsonl").is_file()


def test_a_weights_only_resume_continues_the_lr_schedule(tmp_path, monkeypatch):
    """17.2: a save_only_model checkpoint holds no scheduler state; transformers' resume restores weights and step
    but builds a fresh schedule at step 0. Every step of the resumed run must train at the learning rate of an
    uninterrupted run (cosine, no warm-up, 3 epochs)."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    out = tmp_path / "run"
    settings = ["sft.epochs=3", "sft.save_only_model=true", "sft.eval_each_epoch=false", "sft.lr_scheduler=cosine",
                "sft.warmup_steps=0", "sft.learning_rate=1e-3"]
    _fail_save_at(monkeypatch, 2 * STEPS_PER_EPOCH)
    assert _run(out, *settings) == 2
    monkeypatch.undo()
    first = out / "sft" / f"checkpoint-{STEPS_PER_EPOCH}"
    assert not (first / "scheduler.pt").exists() and not (first / "optimizer.pt").exists()  # weights only
    assert _run(out, *settings) == 0
    total = 3 * STEPS_PER_EPOCH
    state = json.loads((out / "sft" / f"checkpoint-{total}" / "trainer_state.json").read_text())
    logged = {h["step"]: h["learning_rate"] for h in state["log_history"] if "learning_rate" in h}
    assert sorted(logged) == list(range(1, total + 1))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = get_cosine_schedule_with_warmup(opt, 0, total)
    expected = {}
    for step in range(1, total + 1):  # step k trains at the rate after k - 1 scheduler steps
        expected[step] = sched.get_last_lr()[0]
        opt.step()
        sched.step()
    assert logged == pytest.approx(expected)


def test_deepspeed_with_weights_only_checkpoints_is_refused_before_compute(tmp_path, capsys):
    """17.2: under DeepSpeed, transformers resumes only through deepspeed_load_checkpoint (DeepSpeed's global_step*/
    state), which save_only_model never writes: the pair is refused in one line before anything loads."""
    paper = Path(__file__).resolve().parents[1] / "recipes" / "paper" / "fast-math-r1-14b.yaml"
    rc = main(["plan", str(paper), "sft.save_only_model=true", f"output_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert err.startswith("mathrecipe: error: sft.save_only_model=true with sft.deepspeed=") and "false" in err
    assert main(["plan", str(paper), f"output_dir={tmp_path / 'r'}"]) == 0  # the paper recipe itself passes


# ------------------------------------------------------------------------------------------------- packing


def test_trl_bfd_split_packs_a_long_rows_tail_as_its_own_document():
    """What TRL 1.16's packers do to a row longer than the block (read off trl.data_utils.pack_dataset): bfd cuts
    it, bfd_split keeps the tail as a separate sequence (its own seq_lengths entry: positions restart, attention
    stays inside it), wrapped cuts blocks across rows. Rows that fit: bfd_split packs exactly like bfd."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    prompt, trace = [1, 2, 3], [10, 11, 12, 13, 14, 15, 16]  # 10 tokens: the prompt, then the trained trace
    long = Dataset.from_dict({"input_ids": [prompt + trace], "completion_mask": [[0] * 3 + [1] * 7]})
    split = pack_dataset(long, seq_length=8, strategy="bfd_split")[:]
    docs = []
    for ids, lengths in zip(split["input_ids"], split["seq_lengths"]):
        at = 0
        for n in lengths:
            docs.append(ids[at:at + n])
            at += n
    assert sorted(docs) == sorted([prompt + trace[:5], trace[5:]])  # the tail [15, 16]: a document with no prompt
    assert pack_dataset(long, seq_length=8, strategy="bfd")[:]["input_ids"] == [prompt + trace[:5]]  # cut
    short = Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9]],
                               "completion_mask": [[0, 1, 1], [0, 1], [0, 0, 1, 1]]})
    assert pack_dataset(short, 8, "bfd_split")[:] == pack_dataset(short, 8, "bfd")[:]


def test_bfd_split_is_refused_and_long_rows_are_refused_under_it(tmp_path, capsys):
    """17.7a: bfd_split either equals bfd (every row fits) or trains a tail without its prompt, so the recipe
    refuses it in one line; check_lengths treats it like bfd (over-long rows refused), only wrapped passes them."""
    from datasets import Dataset

    from mathrecipe.data.io import DataError
    from mathrecipe.sft import check_lengths

    toy = str(Path(__file__).resolve().parents[1] / "recipes" / "toy.yaml")
    rc = main(["plan", toy, "sft.packing=true", "sft.extra={packing_strategy: bfd_split}", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "sft.extra.packing_strategy=bfd_split" in err and "prompt" in err
    assert main(["plan", toy, "sft.extra={packing_strategy: bfd_split}", f"output_dir={tmp_path}"]) == 0  # no packing
    rows = Dataset.from_dict({"input_ids": [[1] * 10, [1] * 4]})
    with pytest.raises(DataError, match="1 of 2 rows are longer than sft.max_length=8"):
        check_lengths(rows, 8, "d", "bfd_split")
    with pytest.raises(DataError):
        check_lengths(rows, 8, "d", "bfd")
    check_lengths(rows, 8, "d", "wrapped")  # the paper's: concatenated and cut, no token lost
