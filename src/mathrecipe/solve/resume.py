"""An output folder of ``mathrecipe solve`` is bound to what made its answers, so a rerun resumes it.

``solve_config.json`` records the model (its path and the files that decide what it generates:
:func:`mathrecipe.evaluate.identity.model_fingerprint`, as ``eval`` binds its folder), backend, system prompt, sampling,
voting rules and :func:`problems_hash`; it is written before the first answer. A rerun with the same binding keeps
every problem ``solve.jsonl`` already answered and solves the rest; one with another model, settings or problem
file is refused in one line. What the clock does (``--time-limit``, ``--per-problem``), how samples are grouped
(``--wave``, ``--chunk-tokens``), ``--limit`` and batch sizes are not bound: they change how an answer is reached,
not what an answer means.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mathrecipe.errors import MathRecipeError
from mathrecipe.evaluate.identity import fingerprint_changes, model_fingerprint

CONFIG_FILE, CONFIG_FORMAT = "solve_config.json", 1
REDO = ("no time",)  # rows that got no attempt: solved again on a rerun


def problems_hash(problems: Sequence[Mapping[str, Any]]) -> str:
    """Identity of a problem file: sha256 over (id, problem) of every problem, in order. The gold answers are left
    out: adding or fixing them regrades the kept answers instead of refusing them."""
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([str(p["id"]), str(p["problem"])], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def solve_config(model: str, backend: str, system_prompt: str | None, settings: Any, options: Any,
                 problems: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What an output folder is bound to (see the module docstring)."""
    return {
        "format": CONFIG_FORMAT, "model": model, "model_files": model_fingerprint(model), "backend": backend,
        "system_prompt": system_prompt, "sampling": dataclasses.asdict(settings),
        "voting": {k: getattr(options, k) for k in ("answer_format", "early_stop", "min_lead", "stop_at_first_box")},
        "problems": problems_hash(problems),
    }


def conflicts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Names of what differs between a folder's binding and this run's."""
    if old.get("format") != CONFIG_FORMAT:
        return ["format (made by another mathrecipe version)"]
    diff = [k for k in ("model", "model_files", "backend", "system_prompt", "problems") if old.get(k) != new.get(k)]
    for group in ("sampling", "voting"):
        diff += [k for k in new[group] if (old.get(group) or {}).get(k) != new[group][k]]
    names = [{"problems": "problem file"}.get(k, k) for k in diff if k != "model_files"]
    if "model_files" in diff:
        changed = fingerprint_changes(old.get("model_files"), new.get("model_files"))
        names.append(f"model files: {', '.join(changed[:3])}" if changed else "model files")
    return names


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``solve.jsonl``; a line that is not a JSON object with an id is one line naming it."""
    from mathrecipe.data.io import iter_jsonl

    rows = []
    for i, row in iter_jsonl(path):
        if "id" not in row:
            raise MathRecipeError(f"{path}, line {i}: no 'id'; this file was not written by mathrecipe solve: "
                                  "use a new --out folder")
        rows.append(row)
    return rows


def bind(out: Path, config: Mapping[str, Any], log_file: str) -> dict[str, dict[str, Any]]:
    """Check ``out`` against ``config`` and write the binding; returns the rows to keep, by id.

    A folder whose ``log_file`` holds rows is bound by its ``solve_config.json``: other settings are refused, and
    rows without one are refused (their settings are unknown). Kept: every row but those in ``REDO``. Nothing is
    written before the checks pass.
    """
    from mathrecipe.files import atomic_write_text

    cfg_path, log_path = out / CONFIG_FILE, out / log_file
    rows = read_rows(log_path) if log_path.is_file() else []
    old = None
    if cfg_path.is_file():
        try:
            old = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
    if rows and old is None:
        raise MathRecipeError(f"{log_path} exists without {CONFIG_FILE}, so the settings of its answers are "
                              "unknown; use a new --out folder")
    if rows and old is not None:  # a binding counts only once answers were made under it
        diff = conflicts(old, config)
        if diff:
            raise MathRecipeError(f"{out} holds answers made with other settings ({', '.join(diff)} differ); use a "
                                  "new --out folder, or the same model, settings and problems to resume")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")  # before any row
    return {str(r["id"]): r for r in rows if r.get("stop") not in REDO}


def spent_seconds(rows: Sequence[Mapping[str, Any]]) -> float:
    """Time the kept answers already used: the clock when the last of them was written (``clock_s``, which
    counts from the first run's start and carries over reruns); rows without it count their own seconds."""
    clocks = [float(r["clock_s"]) for r in rows if isinstance(r.get("clock_s"), (int, float))]
    if clocks:
        return max(clocks)
    return sum(float(r.get("seconds") or 0.0) for r in rows)
