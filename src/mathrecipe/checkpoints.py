"""Crash-safe files: atomic writes, checkpoints marked complete only once fully saved, resume points.

A ``kill -9`` can land anywhere, including inside a checkpoint save (it once left ``config.json`` and an empty
``generation_config.json`` with no weights). So a checkpoint counts only when it carries ``COMPLETE_MARKER``, written
after the trainer has saved everything on every rank; resumption and epoch selection ignore any other folder.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mathrecipe.files import atomic_write_json

log = logging.getLogger(__name__)
COMPLETE_MARKER = "mathrecipe_complete.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def is_complete(ckpt: Path) -> bool:
    return (ckpt / COMPLETE_MARKER).is_file()


def checkpoints(out: str | Path) -> list[Path]:
    """``checkpoint-N`` folders under ``out``, by step."""
    p = Path(out)
    if not p.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in p.iterdir() if d.is_dir() and (m := _CKPT.match(d.name))]
    return [d for _, d in sorted(found)]


def last_complete_checkpoint(out: str | Path, before_step: int | None = None) -> Path | None:
    """The newest checkpoint that was saved completely (optionally: saved at a step <= ``before_step``).
    Incomplete ones are skipped with a log line."""
    for d in reversed(checkpoints(out)):
        step = int(d.name.split("-")[1])
        if before_step is not None and step > before_step:
            continue
        if is_complete(d):
            return d
        log.warning("%s is incomplete (no %s: its save was interrupted); skipped", d, COMPLETE_MARKER)
    return None


def checkpoint_step(ckpt: str | Path) -> int:
    return int(Path(ckpt).name.split("-")[1])


class CompleteMarker(TrainerCallback):
    """Marks a checkpoint complete once every rank has finished saving it (the trainer calls ``on_save`` after
    model, optimizer, scheduler, RNG and trainer state are written)."""

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # other ranks may still be writing their optimizer shards
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                atomic_write_json(ckpt / COMPLETE_MARKER, {"step": state.global_step, "epoch": state.epoch})
