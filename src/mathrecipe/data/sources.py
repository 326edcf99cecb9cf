"""Training sources, normalised to one row schema with column-wise (batched) ``datasets`` maps.

``SOURCES`` is the registry of source kinds: a recipe's ``data.build.sources`` names each source's ``kind``, and the
build reads its rows through that normaliser. Adding a kind of source = one normaliser registered here (and its
test): ``normalise(ds, source_name, num_proc, batch_size)`` returning the normalised columns.

Normalised columns:
  source (str), problem (str), answer (str), generations (verified-correct traces, list[str]), accuracy (share of
  the source's generations verified correct), min_bytes (UTF-8 size of the smallest correct trace), reason (why the
  row is dropped, "" when kept).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mathrecipe.data.io import DataError, load_hub, load_table
from mathrecipe.grading import extract_answer
from mathrecipe.hub import resolve

NORMAL = ["source", "problem", "answer", "generations", "accuracy", "min_bytes", "reason"]
OPENR1_COLUMNS = ["problem", "answer", "generations", "correctness_math_verify"]
LIGHT_R1_COLUMNS = ["conversations"]


def require(ds: Any, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(f"source {source!r}: missing column(s) {', '.join(map(repr, missing))} "
                        f"(it has {', '.join(ds.column_names)})")


def _text(v: Any) -> str:
    return v.strip() if isinstance(v, str) else ""


def _row(source: str, problem: str, answer: str, correct: list[str], accuracy: float, reason: str) -> dict:
    if not reason and not problem:
        reason = "missing field: problem"
    if not reason and not correct:
        reason = "no verified-correct trace"
    if not answer and correct:  # no gold answer: take the boxed answer of its trace (the paper's rule)
        answer = extract_answer(min(correct, key=len)) or ""
    if not reason and not answer:
        reason = "missing field: answer"
    return {"source": source, "problem": problem, "answer": answer, "generations": correct, "accuracy": accuracy,
            "min_bytes": min((len(g.encode()) for g in correct), default=0), "reason": reason}


def _columns(rows: list[dict]) -> dict[str, list]:
    return {k: [r[k] for r in rows] for k in NORMAL}


def normalise_openr1(ds: Any, source: str, num_proc: int = 1, batch_size: int = 1000) -> Any:
    """OpenR1-Math-220k rows (and openr1_hard, same schema) -> the normalised schema."""
    require(ds, OPENR1_COLUMNS, source)

    def fn(batch: dict[str, list]) -> dict[str, list]:
        rows = []
        for problem, answer, gens, flags in zip(batch["problem"], batch["answer"], batch["generations"],
                                               batch["correctness_math_verify"]):
            gens, flags = gens or [], flags or []
            reason = "" if gens else "missing field: generations"
            if gens and len(flags) != len(gens):
                reason = "missing field: correctness_math_verify"
            correct = [g for g, ok in zip(gens, flags) if ok and _text(g)] if not reason else []
            rows.append(_row(source, _text(problem), _text(answer), correct,
                             sum(bool(f) for f in flags) / len(gens) if gens else 0.0, reason))
        return _columns(rows)

    return ds.map(fn, batched=True, batch_size=batch_size, num_proc=num_proc, remove_columns=ds.column_names,
                  desc=f"normalise {source}")


def normalise_light_r1(ds: Any, source: str, num_proc: int = 1, batch_size: int = 1000) -> Any:
    """Light-R1-SFTData rows (``conversations``: user turn, assistant trace) -> the normalised schema.

    Its traces are the dataset's own verified ones; the gold answer is the trace's boxed answer.
    """
    require(ds, LIGHT_R1_COLUMNS, source)

    def fn(batch: dict[str, list]) -> dict[str, list]:
        rows = []
        for conv in batch["conversations"]:
            turns = conv or []
            user = next((_text(t.get("value")) for t in turns if t.get("from") in ("user", "human")), "")
            trace = next((_text(t.get("value")) for t in turns if t.get("from") in ("assistant", "gpt")), "")
            reason = "" if trace else "missing field: assistant turn"
            rows.append(_row(source, user, "", [trace] if trace else [], 1.0 if trace else 0.0, reason))
        return _columns(rows)

    return ds.map(fn, batched=True, batch_size=batch_size, num_proc=num_proc, remove_columns=ds.column_names,
                  desc=f"normalise {source}")


def normalise_problems(ds: Any, source: str, problem_column: str = "problem", answer_column: str = "answer") -> Any:
    """Problem/answer rows without traces (e.g. GRPO problems) -> the normalised schema (no generations)."""
    require(ds, [problem_column, answer_column], source)

    def fn(batch: dict[str, list]) -> dict[str, list]:
        rows = []
        for p, a in zip(batch[problem_column], batch[answer_column]):
            p, a = _text(p), _text(str(a) if a is not None else "")
            reason = "missing field: problem" if not p else "missing field: answer" if not a else ""
            rows.append({"source": source, "problem": p, "answer": a, "generations": [], "accuracy": 0.0,
                         "min_bytes": 0, "reason": reason})
        return _columns(rows)

    return ds.map(fn, batched=True, remove_columns=ds.column_names, desc=f"normalise {source}")


# kind -> normaliser: the row schemas a training source may have
SOURCES: dict[str, Callable[..., Any]] = {"openr1": normalise_openr1, "light_r1": normalise_light_r1}


def load_source(path: str, split: str = "train", data_files: str | None = None, what: str = "source") -> Any:
    """A source from a local file/folder, or the hub (``data_files`` picks one file of a hub repo). ``what`` names
    the recipe key it came from (e.g. ``data.build.sources[0].path``); a missing local path or an unreachable hub fails at
    once with one line."""
    hint = f"Set {what} to a local .jsonl/.json/.parquet file or a saved dataset folder in the source's schema."
    p = resolve(path, what, hint)
    if isinstance(p, str):
        return load_hub(p, split, what, data_files=data_files)
    return load_table(p, what=what, local_hint=hint)
