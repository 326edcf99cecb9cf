"""``mathrecipe eval`` and ``mathrecipe grade``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def cmd_grade(args: argparse.Namespace) -> int:
    from mathrecipe.data.io import DataError
    from mathrecipe.grading import Grader

    src = Path(args.input)
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    rows: list[dict[str, Any]] = []
    with src.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{src}, line {i}: not valid JSON ({e.msg})") from e
            for col in (args.completion_column, args.answer_column):
                if not isinstance(row, dict) or col not in row:
                    raise DataError(f"{src}, line {i}: missing column {col!r}")
                if row[col] is None:
                    raise DataError(f"{src}, line {i}: column {col!r} is null")
            rows.append(row)
    with Grader(workers=args.workers, timeout=args.timeout) as grader:
        results = grader.grade([str(r[args.completion_column]) for r in rows],
                               [str(r[args.answer_column]) for r in rows])
        timeouts = grader.timeouts
    out = Path(args.output) if args.output else src.with_name(src.stem + ".graded.jsonl")
    with out.open("w", encoding="utf-8") as f:
        for r, g in zip(rows, results):
            f.write(json.dumps({**r, "extracted": g.extracted, "correct": g.correct}, ensure_ascii=False) + "\n")
    n_ok = sum(g.correct for g in results)
    acc = n_ok / len(rows) if rows else 0.0
    print(f"graded {len(rows)} rows: accuracy {acc:.4f} ({n_ok}/{len(rows)}); "
          f"{timeouts} over the {args.timeout:g}s bound (counted wrong) -> {out}")
    return 0


def add_eval_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "grade", help="grade a JSONL of completions with mathrecipe's hang-proof grader",
        description="Grade rows that carry a completion and a gold answer. Every other field is kept; "
        "'extracted' (the last \\boxed{} answer, or null) and 'correct' (bool) are added. Prints the accuracy.",
    )
    p.add_argument("--input", required=True, help="JSONL file, one object per line")
    p.add_argument("--output", help="where to write the graded JSONL (default: INPUT.graded.jsonl)")
    p.add_argument("--completion-column", default="completion")
    p.add_argument("--answer-column", default="answer")
    p.add_argument("--workers", type=int, default=None, help="grading processes (default: min(4, CPUs))")
    p.add_argument("--timeout", type=float, default=5.0, help="hard wall-clock bound per answer, seconds")
    p.set_defaults(func=cmd_grade)


