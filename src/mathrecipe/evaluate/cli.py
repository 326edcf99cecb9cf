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

# EvalConfig fields that are also flags (--samples, --top-p, ...): one name each, everywhere
EVAL_FIELDS = ("samples", "temperature", "top_p", "min_p", "max_new_tokens", "batch_size", "kv_cache_gib",
               "backend", "stop_at_think")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


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
    """The keyword arguments of :func:`mathrecipe.evaluate.run.run_eval` from the command line: the recipe's eval
    section (built-in or ``--recipe``), then ``--preset``, then flags. Checks every value; loads no model."""
    from mathrecipe.evaluate.generation import SamplingSettings, SettingError
    from mathrecipe.evaluate.presets import PRESETS
    from mathrecipe.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    src = f"recipe {args.recipe}" if args.recipe else "the built-in recipe"
    values = {k: getattr(recipe.eval, k) for k in EVAL_FIELDS}
    origin = {k: f"{src}'s eval.{k}" for k in EVAL_FIELDS}
    per_bench: dict[str, int] = {}
    if args.preset:
        preset = PRESETS[args.preset]
        values.update(preset.values)
        origin.update({k: f"preset {args.preset}'s {k}" for k in preset.values})
        per_bench = dict(preset.samples_by_benchmark)
    for k in EVAL_FIELDS:
        v = getattr(args, k)
        if v is not None:
            values[k], origin[k] = v, _flag(k)
            if k == "samples":
                per_bench = {}  # an explicit --samples applies to every benchmark
    seed = args.seed if args.seed is not None else recipe.seed
    system_prompt = args.system_prompt if args.system_prompt is not None else recipe.data.system_prompt

    def named(e: SettingError) -> MathRecipeError:
        where = origin.get(e.key, _flag(e.key))
        return MathRecipeError(f"{where} {e.detail}")

    try:
        settings = SamplingSettings(samples=values["samples"], temperature=values["temperature"],
                                    top_p=values["top_p"], min_p=values["min_p"],
                                    max_new_tokens=values["max_new_tokens"], seed=seed,
                                    stop_at_think=bool(values["stop_at_think"]))
        from mathrecipe.evaluate.generation import check_backend, check_batch_size

        batch_size = check_batch_size(values["batch_size"])
        check_backend(values["backend"])
        if values["kv_cache_gib"] is not None and not values["kv_cache_gib"] > 0:
            raise SettingError("kv_cache_gib", f"must be > 0, got {values['kv_cache_gib']}")
    except SettingError as e:
        raise named(e) from None
    for flag, vals in (("--budgets", args.budgets), ("--k", args.k)):
        bad = [v for v in vals or [] if v < 1]
        if bad:
            raise MathRecipeError(f"{flag} must be integers >= 1, got {bad[0]}")
    if args.limit is not None and args.limit < 1:
        raise MathRecipeError(f"--limit must be >= 1 (the first N problems of each benchmark), got {args.limit}")
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    if not benchmarks:
        raise MathRecipeError("--benchmarks names no benchmark (e.g. --benchmarks math500,aime24)")
    return dict(model=args.model, benchmarks=benchmarks, out_dir=args.out, settings=settings,
                samples_by_benchmark=per_bench, backend=values["backend"], batch_size=batch_size,
                kv_cache_gib=values["kv_cache_gib"], budgets=args.budgets or (), ks=args.k, data_dir=args.data_dir,
                system_prompt=system_prompt or None, limit=args.limit, problem_column=args.problem_column,
                answer_column=args.answer_column,
                toy_length=not args.recipe and origin["max_new_tokens"] == f"{src}'s eval.max_new_tokens")


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
        raise MathRecipeError(f"{_flag(e.key)} {e.detail}") from None
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


def add_sampling_args(p: Any, samples_help: str, stop_help: str) -> None:
    """The sampling flags ``eval`` and ``solve`` share, named like the recipe's eval keys (--recipe, --preset,
    --samples ... --stop-at-think); unset flags stay None so the recipe, then the preset, fill them."""
    from mathrecipe.evaluate.generation import BACKENDS
    from mathrecipe.evaluate.presets import PRESETS

    p.add_argument("--recipe", help="take the sampling defaults, seed and system prompt from this recipe YAML")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    p.add_argument("--samples", type=int, help=samples_help)
    p.add_argument("--temperature", type=float, help="0 = greedy")
    p.add_argument("--top-p", dest="top_p", type=float,
                   help="nucleus sampling: sample from the smallest set of tokens whose probabilities sum to P "
                   "(0 < P <= 1; 1 = off)")
    p.add_argument("--min-p", dest="min_p", type=float,
                   help="drop tokens less likely than P x the most likely one (0 <= P < 1; unset = off)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, help="max new tokens per sample")
    p.add_argument("--batch-size", dest="batch_size",
                   help="sequences per generate() call (hf backend), or 'auto': the most the KV budget holds")
    p.add_argument("--kv-cache-gib", dest="kv_cache_gib", type=float,
                   help="KV-cache budget for --batch-size auto (default: a share of free GPU memory; 4 on CPU)")
    p.add_argument("--backend", help=" or ".join(f"{b.name} ({b.summary})" for b in BACKENDS.values()))
    p.add_argument("--stop-at-think", dest="stop_at_think", action=argparse.BooleanOptionalAction, default=None,
                   help=stop_help)


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
    add_sampling_args(p, samples_help="samples per problem (accuracy = mean pass@1 over them)",
                      stop_help="stop at </think> and take the boxed answer from the reasoning (AIMO-style inference)")
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

