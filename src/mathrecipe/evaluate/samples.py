"""Sample rows (the samples.jsonl schema): grading completions into rows, and reading / appending / resuming the file.

One JSON object per line, one line per sample::

    benchmark, id, sample        which problem (benchmark is absent in a run's in-run files), which of its samples
    completion, tokens, finished the generated text, its length in tokens, False when cut at max_new_tokens
    extracted, answer, correct   the final (last boxed) answer, the gold answer, the grader's verdict
    boxes                        [[tokens, correct], ...] for every complete non-empty \\boxed{} in order: the token
                                 count at which it closes (:func:`answer_token_offsets`) and whether its content is
                                 correct (budget accuracy)

The file only grows by whole chunks of appended lines; a process killed mid-write leaves at most one cut-off last
line, which :func:`read_samples` detects and :func:`compact` removes (atomically) before anything is appended.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathrecipe.evaluate.generation import Completion
from mathrecipe.files import atomic_write_text, naming
from mathrecipe.grading import Grader, boxed_spans, default_grader

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (benchmark, str(id))


def answer_token_offsets(token_ids: Sequence[int], char_ends: Sequence[int], tokenizer: Any) -> list[int]:
    """For each character offset e of the completion's text (where an answer closes), how many tokens it takes to
    reach it: the smallest k whose decoded prefix ids[:k] holds at least e characters.

    One streaming decode (tokenizers' DecodeStream, linear in the tokens: bench/bench_eval.py measures it against
    bisection with full decodes, which is quadratic); bisection only for tokenizers without a fast backend.
    An offset past the decoded text maps to the last token.
    """
    order = sorted(range(len(char_ends)), key=lambda i: char_ends[i])
    out = [len(token_ids)] * len(char_ends)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and order:
        from tokenizers.decoders import DecodeStream

        stream, n, j = DecodeStream(skip_special_tokens=True), 0, 0
        for k, t in enumerate(token_ids, 1):
            n += len(stream.step(backend, int(t)) or "")
            while j < len(order) and n >= char_ends[order[j]]:
                out[order[j]] = k
                j += 1
            if j == len(order):
                break
        return out
    for i, e in enumerate(char_ends):
        lo, hi = 1, max(1, len(token_ids))
        while lo < hi:
            mid = (lo + hi) // 2
            if len(tokenizer.decode(list(token_ids[:mid]), skip_special_tokens=True)) >= e:
                hi = mid
            else:
                lo = mid + 1
        out[i] = lo
    return out


def grade_completions(
    problems: Sequence[Mapping[str, Any]],
    completions: Sequence[Sequence[Completion]],
    tokenizer: Any,
    grader: Grader | None = None,
    benchmarks: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Sample rows for each problem's completions (one grader call for all of them, so its workers run in parallel).

    ``correct``/``extracted`` are the grader's verdict on the final answer; ``boxes`` grades every complete box,
    so accuracy at a token budget can take the last answer complete within the budget.
    """
    g = grader or default_grader()
    names = benchmarks if benchmarks is not None else [None] * len(problems)
    flat = [(b, p, j, c) for b, p, cs in zip(names, problems, completions) for j, c in enumerate(cs)]
    results = g.grade([c.text for *_, c in flat], [str(p["answer"]) for _, p, _, _ in flat])
    spans = [[(content, end) for content, end in boxed_spans(c.text) if content] for *_, c in flat]
    box_ok = iter(g.verify_many([str(p["answer"]) for (_, p, _, _), s in zip(flat, spans) for _ in s],
                                [content for s in spans for content, _ in s]))
    rows = []
    for (b, p, j, c), r, s in zip(flat, results, spans):
        row: dict[str, Any] = {} if b is None else {"benchmark": b}
        offsets = answer_token_offsets(c.token_ids, [end for _, end in s], tokenizer)
        row.update(id=p["id"], sample=j, completion=c.text, tokens=c.n_tokens, finished=c.finished,
                   extracted=r.extracted, answer=str(p["answer"]), correct=r.correct,
                   boxes=[[k, next(box_ok)] for k in offsets])
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- the file


@dataclass
class SamplesFile:
    rows: list[dict[str, Any]]
    bad_lines: int  # lines that are not a JSON object (a write cut off by a kill), dropped
    clean: bool  # False: the file needs rewriting before anything is appended (bad lines, no final newline)


def read_samples(path: str | Path) -> SamplesFile:
    """Every valid row of ``path`` (missing: none). A line that is not a JSON object is counted and skipped, and
    reading goes on: a cut-off line followed by later appends loses only itself."""
    p = Path(path)
    if not p.exists():
        return SamplesFile([], 0, True)
    data = p.read_bytes()
    rows, bad = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            obj = None
        if isinstance(obj, dict) and {"id", "sample"} <= obj.keys():
            rows.append(obj)
        else:
            bad += 1
    return SamplesFile(rows, bad, bad == 0 and (not data or data.endswith(b"\n")))


def _dumps(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_samples(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows as samples.jsonl atomically (the in-run files and compaction use this)."""
    atomic_write_text(path, _dumps(rows))


def append_samples(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append whole rows and flush them to disk; a kill can cut at most the last line, which resuming drops."""
    with naming(path), Path(path).open("a", encoding="utf-8") as f:  # a full disk: an OSError naming the file
        f.write(_dumps(rows))
        f.flush()
        os.fsync(f.fileno())


def row_key(row: Mapping[str, Any], benchmark: str | None = None) -> Key:
    return (str(row.get("benchmark", benchmark)), str(row["id"]))


def complete_rows(rows: Sequence[dict[str, Any]], samples: Mapping[str, int]) -> tuple[list[dict[str, Any]], int]:
    """The rows of problems that have all their samples, each (benchmark, id, sample) once, in file order.

    ``samples`` gives samples per problem for each benchmark; rows of a benchmark not in it are kept as they are.
    Returns (kept rows, how many rows were dropped: partial problems, duplicates, samples out of range).
    """
    seen: set[tuple[str, str, int]] = set()
    unique: list[dict[str, Any]] = []
    for r in rows:
        k = (*row_key(r), int(r["sample"]))
        bench_n = samples.get(k[0])
        if k in seen or (bench_n is not None and not 0 <= k[2] < bench_n):
            continue
        seen.add(k)
        unique.append(r)
    have: dict[Key, int] = {}
    for r in unique:
        have[row_key(r)] = have.get(row_key(r), 0) + 1
    kept = [r for r in unique if row_key(r)[0] not in samples or have[row_key(r)] == samples[row_key(r)[0]]]
    return kept, len(rows) - len(kept)


def compact(path: str | Path, samples: Mapping[str, int]) -> list[dict[str, Any]]:
    """Make ``path`` hold exactly the complete problems' rows (see :func:`complete_rows`), rewriting it atomically
    when anything must go (cut-off lines, partial problems, duplicates). Returns the kept rows."""
    f = read_samples(path)
    kept, dropped = complete_rows(f.rows, samples)
    if dropped or not f.clean:
        if dropped or f.bad_lines:
            log.warning("%s: dropped %d cut-off line(s) and %d row(s) of unfinished problems; they are redone",
                        path, f.bad_lines, dropped)
        write_samples(path, kept)
    return kept
