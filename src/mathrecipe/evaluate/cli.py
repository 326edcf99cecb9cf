"""``mathrecipe eval`` and ``mathrecipe grade``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def cmd_grade(args: argparse.Namespace) -> int:
    from mathrecipe.data.io import DataError, iter_jsonl
    from mathrecipe.grading import Grader

    src = Path(args.input)
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    rows: list[dict[str, Any]] = []
    for i, row in iter_jsonl(src):
        for col in (args.completion_column, args.answer_column):
            if col not in row:
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


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def cmd_eval(args: argparse.Namespace) -> int:
    from mathrecipe.evaluate.generation import SamplingSettings
    from mathrecipe.evaluate.harness import run_eval

    settings = SamplingSettings(n=args.n, temperature=args.temperature, top_p=args.top_p, min_p=args.min_p,
                                max_new_tokens=args.max_tokens, seed=args.seed, stop_at_think=args.stop_at_think)
    summaries = run_eval(
        args.model, [b.strip() for b in args.benchmarks.split(",") if b.strip()], args.out, settings,
        backend=args.backend, budgets=args.budgets or (), ks=args.k, data_dir=args.data_dir,
        batch_size=args.batch_size, system_prompt=args.system_prompt or None, limit=args.limit,
        problem_column=args.problem_column, answer_column=args.answer_column,
    )
    print((Path(args.out) / "summary.md").read_text())
    for name, s in summaries.items():
        print(f"{name}: accuracy {s['accuracy']:.4f}, mean tokens {s['mean_tokens']:.1f}")
    return 0


def add_eval_parsers(sub: Any) -> None:
    from mathrecipe.data.benchmarks import REGISTRY
    from mathrecipe.prompts import SYSTEM_PROMPT

    p = sub.add_parser(
        "eval", help="evaluate a model on math benchmarks: accuracy, tokens, budgets, pass@k, maj@k",
        description="Generate n samples per problem through the training prompt (system prompt + the model's chat "
        "template), grade them, and write samples.jsonl, summary.json, summary.md and budget.png to --out. "
        "Rerunning the same command resumes: finished problems are not generated again.",
    )
    p.add_argument("--model", required=True, help="HF folder or hub id")
    p.add_argument("--benchmarks", required=True,
                   help=f"comma-separated registry names ({', '.join(REGISTRY)}) and/or paths to JSONL/parquet files")
    p.add_argument("--data-dir", help="folder holding the registry's files (e.g. math500_test.jsonl); "
                   "default: the public hub datasets")
    p.add_argument("--out", required=True, help="output folder (resumable)")
    p.add_argument("--n", type=int, default=1, help="samples per problem (accuracy = mean pass@1 over them)")
    p.add_argument("--max-tokens", type=int, default=32768, help="max new tokens per sample")
    p.add_argument("--budgets", type=_ints, help="token budgets for accuracy-vs-budget, e.g. 8192,16384,32768")
    p.add_argument("--k", type=_ints, help="k values for pass@k and maj@k (default: 1,2,4,..,n)")
    p.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-at-think", action="store_true",
                   help="stop at </think> and take the boxed answer from the reasoning (AIMO-style inference)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per generate() call (hf backend)")
    p.add_argument("--limit", type=int, help="first N problems of each benchmark (quick checks)")
    p.add_argument("--system-prompt", default=SYSTEM_PROMPT, help="'' for none")
    p.add_argument("--problem-column", help="problem column of a custom file (default 'problem')")
    p.add_argument("--answer-column", help="answer column of a custom file (default 'answer')")
    p.set_defaults(func=cmd_eval)

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


