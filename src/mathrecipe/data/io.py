"""Reading and writing rows: JSONL / parquet / a saved ``datasets`` folder / the HF hub, with errors that name the
culprit; atomic writes; the metadata that travels with a built set (its system prompt)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mathrecipe.errors import MathRecipeError
from mathrecipe.files import atomic_write, atomic_write_text, replace_dir
from mathrecipe.hub import resolve

TABLE_HINT = "Give a local .jsonl/.json/.parquet file, a folder written by datasets' save_to_disk, or a hub dataset id."
META_FILE = "mathrecipe.json"  # inside a saved dataset folder; beside a file as <file>.mathrecipe.json


class DataError(MathRecipeError):
    """Bad input data; the message names the file (or source), the row and the column."""


def load_table(path: str | Path, split: str = "train", what: str = "data", local_hint: str = TABLE_HINT) -> Any:
    """A ``datasets.Dataset`` from a .jsonl/.json/.parquet file, a ``save_to_disk`` folder, or a hub id.

    ``what`` names the setting the path came from in errors (e.g. ``data.sft_path``); a missing local path or an
    unreachable hub fails at once (``mathrecipe.hub.resolve``).
    """
    p = resolve(path, what, local_hint)  # before importing datasets: a wrong path fails in well under a second
    if isinstance(p, str):
        return load_hub(p, split, what)
    import datasets

    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "state.json").exists():
            ds = datasets.load_from_disk(str(p))
            return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        raise DataError(f"{p}: a folder, but not one written by datasets.save_to_disk")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in (".jsonl", ".json"):
            _check_text_file(p, what)
            return datasets.load_dataset("json", data_files=str(p), split="train")
        if suffix == ".parquet":
            return datasets.load_dataset("parquet", data_files=str(p), split="train")
        raise DataError(f"{p}: unsupported file type {suffix!r} (use .jsonl, .json, .parquet or a saved dataset)")
    raise DataError(f"{what}: {p} is neither a file nor a folder")


def load_hub(repo_id: str, split: str, what: str, **kwargs: Any) -> Any:
    """``datasets.load_dataset(repo_id, split=split, **kwargs)``; a repo that is missing or not accessible as one
    line. Call ``mathrecipe.hub.resolve`` / ``require_hub`` first (no hub waits)."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    try:
        return datasets.load_dataset(repo_id, split=split, **kwargs)
    except DatasetNotFoundError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise DataError(f"{what}: hub dataset {repo_id!r} not found or not accessible ({first})") from e


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a malformed line (not UTF-8, not JSON, not an object) is an
    error naming file and line."""
    p = Path(path)
    with p.open("rb") as f:
        yield from iter_jsonl_lines(f, str(p))


def decode_line(line: bytes | str, where: str, i: int) -> str:
    """A line of a text file as text; bytes that are not UTF-8 are a DataError naming the line, the column and the
    byte (a file saved as Latin-1 or UTF-16 would otherwise be a UnicodeDecodeError traceback)."""
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}, line {i}: not UTF-8 text (byte 0x{line[e.start]:02x} at byte {e.start + 1} of the "
                        "line); save the file as UTF-8") from None


def decode_utf8(data: bytes, name: str) -> str:
    """``data`` (a whole file) as UTF-8 text, a leading byte-order mark dropped (spreadsheet programs write one);
    bytes that are not UTF-8 are one line naming ``name``, the line and the column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{name}, line {line}: not UTF-8 (byte 0x{data[e.start]:02x} at column {column}); "
                        "save the file as UTF-8") from None


def iter_jsonl_lines(lines: Iterable[str | bytes], where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`iter_jsonl` over any stream of lines, text or bytes (e.g. stdin); errors say ``where, line N``."""
    for i, raw in enumerate(lines, 1):
        line = decode_line(raw, where, i)
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}, line {i}: not valid JSON ({e.msg}); give one object a line") from e
        if not isinstance(obj, dict):
            raise DataError(f"{where}, line {i}: each line must be a JSON object, got {type(obj).__name__}")
        yield i, obj


def _check_text_file(p: Path, what: str) -> None:
    """Before ``datasets`` reads a .jsonl/.json file: the first malformed line with its number (datasets' own
    errors say neither which line nor, for bytes that are not UTF-8, anything but a traceback), and a file without
    rows (datasets' JSON loader raises a bare StopIteration on one)."""
    rows = 0
    if p.suffix.lower() == ".jsonl":
        for _ in iter_jsonl(p):
            rows += 1
    else:
        with p.open("rb") as f:
            for i, line in enumerate(f, 1):
                rows += bool(decode_line(line, str(p), i).strip())
    if not rows:
        raise DataError(f"{what}: {p} is empty (no rows); give a file with one JSON object per line")


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
    """One JSON object a line, written atomically."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    return atomic_write(path, write)


def save_dataset(ds: Any, path: str | Path, meta: dict[str, Any]) -> Path:
    """``ds.save_to_disk`` plus its metadata file, into a temporary folder that then replaces ``path``: the folder
    is always a whole set, with the metadata of the rows it holds."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        ds.save_to_disk(str(tmp))
        atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        replace_dir(tmp, p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return p


# --- the system prompt a set was built with --------------------------------------------------------------------


def meta_path(path: str | Path) -> Path:
    """Where a set's metadata lives: ``<folder>/mathrecipe.json``, or ``<file>.mathrecipe.json`` beside a file."""
    p = Path(path)
    return p / META_FILE if p.is_dir() else p.with_name(f"{p.name}.{META_FILE}")


def read_dataset_meta(path: str | Path) -> dict[str, Any] | None:
    """The metadata of the set at ``path``, or None when it has none."""
    m = meta_path(path)
    if not m.is_file():
        return None
    try:
        meta = json.loads(m.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{m}: not valid JSON ({e.msg}, line {e.lineno}); delete it or rebuild the set") from e
    if not isinstance(meta, dict):
        raise DataError(f"{m}: expected a JSON object; delete it or rebuild the set")
    return meta


_UNKNOWN = object()  # rows whose prompts are plain text: the stage adds the recipe's system prompt itself


def _system_prompt(path: str | Path) -> tuple[Any, str]:
    """(system prompt or None or _UNKNOWN, where it was read)."""
    meta = read_dataset_meta(path) if Path(path).exists() else None
    if meta is not None and "system_prompt" in meta:
        return meta["system_prompt"] or None, f"its {META_FILE}"
    import pyarrow as pa
    import pyarrow.compute as pc

    ds = load_table(path)
    col = next((c for c in ("messages", "prompt") if c in ds.column_names), None)
    if col is None:
        return _UNKNOWN, "its rows"
    arr = ds.data.column(col)  # Arrow, zero-copy: only the first turns are read, never the traces
    if not pa.types.is_list(arr.type) or not pa.types.is_struct(arr.type.value_type) \
            or arr.type.value_type.get_field_index("role") < 0:
        return _UNKNOWN, "its rows"
    first = pc.list_element(pc.filter(arr, pc.greater(pc.list_value_length(arr), 0)), 0)
    roles = pc.struct_field(first, "role").to_pylist()
    contents = pc.struct_field(first, "content").to_pylist()
    prompts = [c if r == "system" else None for r, c in zip(roles, contents)]
    found = dict.fromkeys(prompts)
    if len(found) > 1:
        (a, b), rows = list(found)[:2], {}
        for i, q in enumerate(prompts, 1):
            rows.setdefault(q, i)
        raise DataError(f"{path}: its rows carry different system prompts (row {rows[a]}: {_short(a)}, row "
                        f"{rows[b]}: {_short(b)}); rebuild it with one data.system_prompt")
    return (prompts[0] if prompts else None), f"the system turn of its column {col!r}"


def dataset_system_prompt(path: str | Path) -> str | None:
    """The system prompt the set at ``path`` was built with: from its metadata (written by ``mathrecipe data
    build``), else the system turn of its rows' ``messages``/``prompt`` column; None when its rows have no system
    turn (or are plain text). Rows that disagree are a DataError naming two of them."""
    prompt, _ = _system_prompt(path)
    return None if prompt is _UNKNOWN else prompt


def check_system_prompt(path: str | Path, expected: str | None, what: str) -> None:
    """Raise a one-line DataError when the set at ``path`` was built with another system prompt than ``expected``
    (None or "" = no system turn). ``what`` names the set (e.g. "SFT data (data.sft_path)"). Plain-text prompt
    rows pass: the stage wraps them with ``expected`` itself."""
    actual, where = _system_prompt(path)
    if actual is _UNKNOWN or (actual or None) == (expected or None):
        return
    if actual is None:
        fix = "data.system_prompt=null"
    elif len(actual) <= 100:
        fix = f"data.system_prompt={json.dumps(actual, ensure_ascii=False)}"  # JSON strings are YAML values
    else:
        fix = "data.system_prompt set to the set's prompt (mathrecipe.data.io.dataset_system_prompt prints it)"
    raise DataError(
        f"{what} {path} was built with the system prompt {_short(actual)} (from {where}) but the recipe's "
        f"data.system_prompt is {_short(expected)}; train and evaluate with one prompt: {fix}, or rebuild the set "
        f"with this recipe's prompt (mathrecipe data build)"
    )


def _short(prompt: str | None, n: int = 48) -> str:
    if not prompt:
        return "none (no system turn)"
    return repr(prompt if len(prompt) <= n else prompt[: n - 1] + "…")
