"""``mathrecipe eval``, ``mathrecipe grade`` and ``mathrecipe compare`` (argparse; the work is in run/compare).

Every argument is checked before any model loads; a bad one is a one-line error naming the flag (or the recipe key
or preset it came from) and the fix. The sampling defaults are the recipe's ``EvalConfig`` -- the built-in recipe's,
or ``--recipe FILE``'s eval section -- then ``--preset``, then explicit flags: argparse holds no second copy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mathrecipe.errors import MathRecipeError
from mathrecipe.evaluate.sampling import add_sampling_args, flag

# ------------------------------------------------------------------------------------------------ grade


def cmd_grade(args: argparse.Namespace) -> int:
    from mathrecipe.data.io import DataError, iter_jsonl
    from mathrecipe.files import atomic_write_text
    from mathrecipe.grading import Grader

    src = Path(args.input)
    if src.is_dir():
        raise DataError(f"--input {src}: is a folder; give a JSONL file (one object per line)")
    if not src.is_file():
        raise DataError(f"--input {src}: no such file")
    if not args.timeout > 0:
        raise MathRecipeError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    if args.workers is not None and args.workers < 1:
        raise MathRecipeError(f"--workers must be >= 1, got {args.workers}")
    out = Path(args.output) if args.output else src.with_name(src.stem + ".graded.jsonl")
    if out.is_dir():
        raise DataError(f"--output {out}: is a folder; give a file name")
    rows: list[dict[str, Any]] = []
    for i, row in iter_jsonl(src):
        for col in (args.completion_column, args.answer_column):
            if col not in row:
                raise DataError(f"{src}, line {i}: missing column {col!r}")
            if row[col] is None:
                raise DataError(f"{src}, line {i}: column {col!r} is null")
        rows.append(row)
    if not rows:  # "accuracy 0/0" with exit 0 reads as a result; there is none
        raise DataError(f"--input {src}: no rows to grade (the file is empty or blank); give a JSONL file with one "
                        f"object per line holding {args.completion_column!r} and {args.answer_column!r}")
    with Grader(workers=args.workers, timeout=args.timeout) as grader:
        results = grader.grade([str(r[args.completion_column]) for r in rows],
                               [str(r[args.answer_column]) for r in rows])
        timeouts = grader.timeouts
    atomic_write_text(out, "".join(json.dumps({**r, "extracted": g.extracted, "correct": g.correct}, ensure_ascii=False)
                              + "\n" for r, g in zip(rows, results)))
    n_ok = sum(g.correct for g in results)
    acc = n_ok / len(rows)
    print(f"graded {len(rows)} rows: accuracy {acc:.4f} ({n_ok}/{len(rows)}); "
          f"{timeouts} over the {args.timeout:g}s bound (counted wrong) -> {out}")
    return 0


# ------------------------------------------------------------------------------------------------- eval


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def resolve_eval(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`mathrecipe.evaluate.run.run_eval` from the command line: sampling from the
    one resolver (recipe, then ``--preset``, then flags), then eval's own flags. Checks every value; loads no
    model."""
    from mathrecipe.evaluate.sampling import resolve_sampling

    s = resolve_sampling(args)
    for name, vals in (("--budgets", args.budgets), ("--k", args.k)):
        bad = [v for v in vals or [] if v < 1]
        if bad:
            raise MathRecipeError(f"{name} must be integers >= 1, got {bad[0]}")
    if args.limit is not None and args.limit < 1:
        raise MathRecipeError(f"--limit must be >= 1 (the first N problems of each benchmark), got {args.limit}")
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    if not benchmarks:
        raise MathRecipeError("--benchmarks names no benchmark (e.g. --benchmarks math500,aime24)")
    return dict(model=args.model, benchmarks=benchmarks, out_dir=args.out, settings=s.settings,
                samples_by_benchmark=s.samples_by_benchmark, backend=s.values["backend"],
                generate_batch_size=s.generate_batch_size,
                kv_cache_gib=s.values["kv_cache_gib"], budgets=args.budgets or (), ks=args.k, data_dir=args.data_dir,
                system_prompt=s.system_prompt, limit=args.limit, problem_column=args.problem_column,
                answer_column=args.answer_column, toy_length=not args.recipe and s.from_recipe("max_new_tokens"))


def cmd_eval(args: argparse.Namespace) -> int:
    from mathrecipe.evaluate.generation import SettingError
    from mathrecipe.evaluate.run import check_model_arg, run_eval

    kwargs = resolve_eval(args)
    check_model_arg(args.model)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise MathRecipeError(f"--data-dir {args.data_dir}: no such folder")
    try:
        summaries = run_eval(**kwargs)
    except SettingError as e:
        raise MathRecipeError(f"{flag(e.key)} {e.detail}") from None
    print((Path(args.out) / "summary.md").read_text())
    for name, s in summaries.items():
        print(f"{name}: accuracy {s['accuracy']:.4f}, mean tokens {s['mean_tokens']:.1f}")
    return 0


# ---------------------------------------------------------------------------------------------- compare


def cmd_compare(args: argparse.Namespace) -> int:
    from mathrecipe.evaluate.compare import compare

    if args.resamples < 100:
        raise MathRecipeError(f"--resamples must be >= 100, got {args.resamples}")
    result = compare(args.dirs, args.out, seed=args.seed, resamples=args.resamples)
    print(Path(result["files"]["markdown"]).read_text())
    print(f"wrote {result['files']['markdown']}, {result['files']['json']}, {result['files']['png']}")
    return 0


# ---------------------------------------------------------------------------------------------- parsers


def add_eval_parsers(sub: Any) -> None:
    """Register ``eval``, ``grade`` and ``compare`` on the top-level ``mathrecipe`` subparsers."""
    from mathrecipe.data.benchmarks import REGISTRY
    from mathrecipe.recipe import EvalConfig

    d = EvalConfig()
    p = sub.add_parser(
        "eval", help="evaluate a model on math benchmarks: accuracy, tokens, budgets, pass@k, maj@k",
        description="Generate samples per problem through the training prompt (system prompt + the model's chat "
        "template), grade them, and write samples.jsonl, summary.json, summary.md and budget.png to --out. "
        "Rerunning the same command resumes (also after kill -9): finished problems are not generated again; "
        "other settings, or other model files at the same --model path, into the same --out are refused. Every "
        "prompt plus --max-new-tokens is checked against the model's context first. Sampling defaults come from the recipe's eval section "
        f"(built-in: samples {d.samples}, temperature {d.temperature}, max new tokens {d.max_new_tokens}; "
        "or --recipe FILE), then --preset, then the flags. For published-style numbers use --preset r1.",
    )
    p.add_argument("--model", required=True, help="HF folder or hub id")
    p.add_argument("--benchmarks", required=True,
                   help=f"comma-separated registry names ({', '.join(REGISTRY)}) and/or paths to JSONL/parquet files")
    p.add_argument("--out", required=True, help="output folder (resumable)")
    p.add_argument("--data-dir", help="folder holding the registry's files (e.g. math500_test.jsonl); "
                   "default: the public hub datasets")
    add_sampling_args(p)
    p.add_argument("--seed", type=int, help="sampling seed (default: the recipe's seed); the same seed and "
                   "settings give the same samples")
    p.add_argument("--system-prompt", help="'' for none (default: the recipe's data.system_prompt)")
    p.add_argument("--budgets", type=_ints, help="token budgets for accuracy-vs-budget, e.g. 8192,16384,32768")
    p.add_argument("--k", type=_ints, help="k values for pass@k and maj@k, each <= the samples per problem "
                   "(default: 1,2,4,..,samples)")
    p.add_argument("--limit", type=int, help="first N problems of each benchmark (quick checks)")
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

    p = sub.add_parser(
        "compare", help="compare evaluations: tables, paired differences, overlaid budget curves",
        description="Compare `mathrecipe eval` folders and/or `mathrecipe run` output folders (a run contributes "
        "its selected SFT epoch, its start model when GRPO started without SFT, and GRPO). Per benchmark: pass@1 "
        "with its 95 % CI, maj@n, mean tokens (all and correct), truncation, and each entry's paired difference "
        "against the first with a seeded bootstrap CI over problems. Writes compare.md, compare.json and "
        "compare.png (accuracy vs token budget, overlaid).",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="eval output folders or run output folders")
    p.add_argument("--out", help="output folder (default: DIR/compare for the first DIR)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    p.set_defaults(func=cmd_compare)

