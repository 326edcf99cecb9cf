"""Problems to answer: the ONE loader behind ``run``'s test and dev sets, ``eval``'s benchmarks and ``solve``'s
input.

Rows come from a .jsonl or .csv file (read directly, so values stay as written and errors name the line; a leading
byte-order mark is dropped), from ``-`` (JSONL on stdin), or from anything ``load_table`` reads (.json, .parquet, a
saved dataset folder, a hub id). Each row becomes ``{"id", "problem", "answer"}``. What the three callers differ
in is a parameter: the columns, whether an answer or an id is required, whether ids are made text. A missing
column, an empty field or a repeated id is one line naming the source and the row (counted from 1).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mathrecipe.data.io import DataError, decode_utf8, iter_jsonl_lines, load_table

STDIN = "-"


def answer_text(value: Any) -> str:
    """A gold answer as text: an integral float as an integer (``3.0`` -> ``"3"``), None as ``""``, stripped."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value).strip()


def _stdin_lines(stdin: Iterable[str] | None, name: str) -> Iterable[str]:
    if stdin is not None:
        return stdin
    buffer = getattr(sys.stdin, "buffer", None)  # bytes, so that a bad byte is named rather than a traceback
    if buffer is None:
        return sys.stdin
    return io.StringIO(decode_utf8(buffer.read(), name))


def read_rows(source: str | Path, name: str, what: str, stdin: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The rows of ``source`` as dicts (see the module doc for the formats); ``name`` prefixes every error, ``what``
    names the setting the source came from (a missing path is one line naming it)."""
    from mathrecipe.hub import resolve

    if str(source) == STDIN:
        return [obj for _, obj in iter_jsonl_lines(_stdin_lines(stdin, name), name)]
    suffix = Path(source).suffix.lower()
    if suffix in (".csv", ".jsonl"):
        path = resolve(str(source), what, "Give a local .jsonl or .csv file.")
        if isinstance(path, Path) and path.is_file():
            text = decode_utf8(path.read_bytes(), name)
            if suffix == ".jsonl":
                return [row for _, row in iter_jsonl_lines(io.StringIO(text), name)]
            return list(csv.DictReader(io.StringIO(text, newline="")))
    return load_table(source, what=what).to_list()


def to_problems(rows: Sequence[Mapping[str, Any]], name: str, problem_column: str = "problem",
                answer_column: str = "answer", id_column: str | None = "id", answer_required: bool = True,
                id_required: bool = False, text_ids: bool = False,
                answer_transform: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """``rows`` as problems ``{"id", "problem", "answer"}``.

    id: the row's ``id_column`` value, else its ``id`` value, else its 0-based position (``id_required``: a row
    without one is an error); ``text_ids``: made a stripped string. answer: :func:`answer_text`, then
    ``answer_transform``; without ``answer_required`` a row with no answer has no ``answer`` key. Errors: a column
    absent from every row, a row without a required column, an empty problem or required answer, a repeated id.
    """
    if not rows:
        raise DataError(f"{name}: no problems in it")
    required = [c for c in (id_column if id_required else None, problem_column,
                            answer_column if answer_required else None) if c]
    for col in required:
        if all(col not in r for r in rows):
            raise DataError(f"{name}: missing column {col!r}; it has {', '.join(repr(c) for c in rows[0])}")
    problems: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, 1):
        for col in required:
            if col not in row:
                raise DataError(f"{name}, row {i}: missing column {col!r} (columns: {', '.join(row)})")
        problem = row[problem_column]
        if problem is None or not str(problem).strip():
            raise DataError(f"{name}, row {i}: column {problem_column!r} is empty")
        pid = row.get(id_column) if id_column else None
        if pid is None:
            pid = row.get("id")
        if id_required and (pid is None or not str(pid).strip()):
            raise DataError(f"{name}, row {i}: column {id_column!r} is empty")
        if pid is None:
            pid = i - 1
        if text_ids:
            pid = str(pid).strip()
        if str(pid) in seen:
            raise DataError(f"{name}, row {i}: id {str(pid)!r} repeats row {seen[str(pid)]}; ids must be unique")
        seen[str(pid)] = i
        out = {"id": pid, "problem": problem if isinstance(problem, str) else str(problem)}
        answer = answer_text(row.get(answer_column))
        if answer and answer_transform:
            answer = answer_transform(answer)
        if answer_required and not answer:
            raise DataError(f"{name}, row {i}: column {answer_column!r} is empty")
        if answer:
            out["answer"] = answer
        problems.append(out)
    return problems


def load_problems(source: str | Path, what: str | None = None, stdin: Iterable[str] | None = None,
                  **columns: Any) -> list[dict[str, Any]]:
    """The problems of ``source`` (a file, ``-``, a saved dataset or a hub id): :func:`read_rows`, then
    :func:`to_problems` with ``columns`` (its keyword arguments). Errors start with ``what`` (the setting or flag
    the source came from) and the source."""
    shown = f"{source} (stdin)" if str(source) == STDIN else str(source)
    name = f"{what} {shown}" if what else shown
    return to_problems(read_rows(source, name, what or "data", stdin), name, **columns)
