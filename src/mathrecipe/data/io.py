"""Reading rows from JSONL / parquet / a saved ``datasets`` folder / the HF hub, with errors that name the culprit."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mathrecipe.errors import MathRecipeError


class DataError(MathRecipeError):
    """Bad input data; the message names the file (or source), the row and the column."""


def load_table(path: str | Path, split: str = "train") -> Any:
    """A ``datasets.Dataset`` from a .jsonl/.json/.parquet file, a ``save_to_disk`` folder, or a hub id."""
    import datasets

    p = Path(path)
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "state.json").exists():
            ds = datasets.load_from_disk(str(p))
            return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        raise DataError(f"{p}: a folder, but not one written by datasets.save_to_disk")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in (".jsonl", ".json"):
            _check_jsonl(p)
            return datasets.load_dataset("json", data_files=str(p), split="train")
        if suffix == ".parquet":
            return datasets.load_dataset("parquet", data_files=str(p), split="train")
        raise DataError(f"{p}: unsupported file type {suffix!r} (use .jsonl, .json, .parquet or a saved dataset)")
    if "/" in str(path) and not str(path).startswith((".", "/")):
        return datasets.load_dataset(str(path), split=split)  # a hub id (users have the hub)
    raise DataError(f"{path}: no such file or folder")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a malformed line is an error naming file and line."""
    p = Path(path)
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}, line {i}: not valid JSON ({e.msg})") from e
            if not isinstance(obj, dict):
                raise DataError(f"{p}, line {i}: each line must be a JSON object, got {type(obj).__name__}")
            yield i, obj


def _check_jsonl(p: Path) -> None:
    """Fail on the first malformed line with its number (datasets' own error does not say which)."""
    if p.suffix.lower() == ".jsonl":
        for _ in iter_jsonl(p):
            pass


def require_columns(ds: Any, columns: Sequence[str], source: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"it has {', '.join(repr(c) for c in ds.column_names)}"
        )


def require_nonempty(ds: Any, columns: Sequence[str], source: str) -> None:
    """Every row has a non-empty value in each column (rows counted from 1, as in a JSONL file)."""
    for c in columns:
        for i, v in enumerate(ds[c], 1):
            if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, list) and not v):
                raise DataError(f"{source}, row {i}: column {c!r} is empty")


def write_jsonl(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return p
