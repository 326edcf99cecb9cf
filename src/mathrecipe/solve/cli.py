"""``mathrecipe solve``: AIMO-style answers under a time budget -> answers.csv, solve.jsonl.

Every argument, the model folder and the problem file are checked before the model loads; a bad one is one line
naming the flag, file, row or column, and the fix. Sampling defaults come from the recipe's eval section (built-in,
or ``--recipe FILE``), then ``--preset``, then flags -- as in ``mathrecipe eval``, with the same flag names.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mathrecipe.errors import MathRecipeError
from mathrecipe.solve.answers import ANSWER_FORMATS, INT_FORMAT, check_answer_format
from mathrecipe.solve.policy import format_duration, parse_duration
from mathrecipe.solve.solver import ProblemResult, SolveOptions, Solver

ANSWERS_FILE, LOG_FILE = "answers.csv", "solve.jsonl"


# ------------------------------------------------------------------------------------------------ input


def _rows_from_stdin(stream: Iterable[str]) -> list[dict[str, Any]]:
    from mathrecipe.data.io import iter_jsonl_lines

    return [obj for _, obj in iter_jsonl_lines(stream, "--problems - (stdin)")]


def read_problems(source: str, problem_column: str = "problem", answer_column: str = "answer",
                  stdin: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Problems as dicts with ``id``, ``problem`` and (when the file has one) ``answer``, all strings.

    ``source``: a .jsonl or .csv file (with a header), ``-`` for JSONL on ``stdin``, or a .json/.parquet file, a saved
    dataset or a hub id (``mathrecipe.data.io.load_table``). A missing column, an empty id or problem, or a repeated id
    is a one-line error naming the source and the row (rows count from 1).
    """
    from mathrecipe.data.io import DataError, iter_jsonl, load_table

    suffix = Path(source).suffix.lower()
    if source == "-":
        name, rows = "--problems - (stdin)", _rows_from_stdin(stdin if stdin is not None else sys.stdin)
    elif suffix in (".csv", ".jsonl"):  # read directly: exact values (ids stay as written), errors name the line
        name, path = f"--problems {source}", Path(source)
        if not path.is_file():
            raise DataError(f"{name}: no such file")
        if suffix == ".jsonl":
            rows = [row for _, row in iter_jsonl(path)]
        else:
            with path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
    else:
        name = f"--problems {source}"
        rows = load_table(source, what="--problems").to_list()
    if not rows:
        raise DataError(f"{name}: no problems in it")
    columns = list(rows[0])
    for col in ("id", problem_column):
        if all(col not in r for r in rows):
            raise DataError(f"{name}: missing column {col!r}; it has {', '.join(repr(c) for c in columns)}")
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(rows, 1):
        pid, problem = r.get("id"), r.get(problem_column)
        if pid is None or not str(pid).strip():
            raise DataError(f"{name}, row {i}: column 'id' is empty")
        if problem is None or not str(problem).strip():
            raise DataError(f"{name}, row {i}: column {problem_column!r} is empty")
        pid = str(pid).strip()
        if pid in seen:
            raise DataError(f"{name}, row {i}: id {pid!r} repeats row {seen[pid]}; ids must be unique")
        seen[pid] = i
        row = {"id": pid, "problem": str(problem)}
        gold = r.get(answer_column)
        if gold is not None and str(gold).strip():
            row["answer"] = str(gold).strip()
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------------ output


def answers_csv(results: Sequence[ProblemResult]) -> str:
    """``id,answer`` per problem; the answer cell is empty when no sample gave a valid answer."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "answer"])
    for r in results:
        w.writerow([r.id, "" if r.answer is None else r.answer])
    return buf.getvalue()


def write_outputs(out: Path, results: Sequence[ProblemResult],
                  grades: Mapping[str, tuple[str, bool]] | None = None) -> None:
    """answers.csv and solve.jsonl, each written atomically (a kill leaves the previous whole file)."""
    from mathrecipe.files import atomic_write_text

    rows = []
    for r in results:
        row = r.row()
        if grades and r.id in grades:
            row["gold"], row["correct"] = grades[r.id]
        rows.append(json.dumps(row, ensure_ascii=False) + "\n")
    atomic_write_text(out / ANSWERS_FILE, answers_csv(results))
    atomic_write_text(out / LOG_FILE, "".join(rows))


def grade_answers(problems: Sequence[Mapping[str, Any]], results: Sequence[ProblemResult],
                  grader: Any = None) -> dict[str, tuple[str, bool]]:
    """{id: (gold, correct)} for problems with a gold answer, by the grader (``verify(gold, answer)``)."""
    from mathrecipe.grading import default_grader

    gold = {str(p["id"]): p["answer"] for p in problems if p.get("answer")}
    graded = [r for r in results if r.id in gold]
    if not graded:
        return {}
    ok = (grader or default_grader()).verify_many(
        [gold[r.id] for r in graded], [None if r.answer is None else str(r.answer) for r in graded])
    return {r.id: (gold[r.id], c) for r, c in zip(graded, ok)}


def summary_lines(results: Sequence[ProblemResult], elapsed_s: float, budget: str | None,
                  grades: Mapping[str, tuple[str, bool]]) -> list[str]:
    stops: dict[str, int] = {}
    for r in results:
        stops[r.stop] = stops.get(r.stop, 0) + 1
    samples = sum(len(r.samples) for r in results)
    unanswered = sum(r.answer is None for r in results)
    lines = [f"solved {len(results)} problems in {format_duration(elapsed_s)}"
             + (f" (budget {budget})" if budget else "")
             + f": {samples} samples, {sum(r.tokens for r in results)} tokens; stopped: "
             + ", ".join(f"{k} {v}" for k, v in sorted(stops.items()))
             + (f"; {unanswered} without a valid answer (empty in {ANSWERS_FILE})" if unanswered else "")]
    if grades:
        n_ok = sum(ok for _, ok in grades.values())
        lines.append(f"accuracy {n_ok / len(grades):.4f} ({n_ok}/{len(grades)} problems with an answer column)")
    return lines


# ------------------------------------------------------------------------------------------------ run


def run_solve(model: str, problems: Sequence[Mapping[str, Any]], out_dir: str | Path, settings: Any,
              options: SolveOptions, backend: str = "hf", batch_size: Any = "auto",
              kv_cache_gib: float | None = None, system_prompt: str | None = None,
              started_at: float | None = None, progress: bool = True) -> tuple[list[ProblemResult], list[str]]:
    """Load the model, answer ``problems``, write answers.csv and solve.jsonl to ``out_dir`` (after every problem)
    and, when problems carry gold answers, grade them. Returns (results, summary lines).

    The global budget (``options.time_budget_s``) runs from ``started_at`` (default: now), so loading counts.
    """
    from tqdm.auto import tqdm

    from mathrecipe.evaluate.generation import open_generator

    started_at = time.monotonic() if started_at is None else started_at
    out = Path(out_dir)
    tokenizer, gen = open_generator(backend, model, batch_size, kv_cache_gib, settings.seed)
    solver = Solver(gen, tokenizer, settings, options, system_prompt=system_prompt, started_at=started_at)
    results: list[ProblemResult] = []
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(problems), desc="solve", unit="problem", disable=not progress, file=sys.stderr) as bar:

        def show() -> None:
            left = solver.time_left()
            bar.set_postfix_str(f"time left {format_duration(left)}" if left is not None
                                else f"elapsed {format_duration(time.monotonic() - started_at)}")

        def done(r: ProblemResult) -> None:
            results.append(r)
            write_outputs(out, results)
            bar.update(1)
            show()

        solver.solve(problems, on_problem=done, on_call=show)
    elapsed = time.monotonic() - started_at
    grades = grade_answers(problems, results)
    if grades:
        write_outputs(out, results, grades)
    budget = (format_duration(options.time_budget_s) if options.time_budget_s
              else f"{format_duration(options.per_problem_s)} a problem" if options.per_problem_s else None)
    return results, summary_lines(results, elapsed, budget, grades)


# ------------------------------------------------------------------------------------------------ CLI


def _wave(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text  # "auto", or a word SolveOptions refuses in one line


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def resolve_solve(args: argparse.Namespace, stdin: Iterable[str] | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`run_solve` from the command line: the recipe's eval section, then ``--preset``,
    then flags (as ``mathrecipe eval``). Checks every value and reads the problems; loads no model."""
    from mathrecipe.evaluate.cli import EVAL_FIELDS
    from mathrecipe.evaluate.generation import SamplingSettings, SettingError, check_batch_size
    from mathrecipe.evaluate.presets import PRESETS
    from mathrecipe.evaluate.run import _require_backend, check_model_arg
    from mathrecipe.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    src = f"recipe {args.recipe}" if args.recipe else "the built-in recipe"
    values = {k: getattr(recipe.eval, k) for k in EVAL_FIELDS}
    origin = {k: f"{src}'s eval.{k}" for k in EVAL_FIELDS}
    if args.preset:
        values.update(PRESETS[args.preset].values)
        origin.update({k: f"preset {args.preset}'s {k}" for k in PRESETS[args.preset].values})
    for k in EVAL_FIELDS:
        if getattr(args, k, None) is not None:
            values[k], origin[k] = getattr(args, k), _flag(k)
    seed = args.seed if args.seed is not None else recipe.seed
    system_prompt = args.system_prompt if args.system_prompt is not None else recipe.data.system_prompt
    try:
        settings = SamplingSettings(samples=values["samples"], temperature=values["temperature"],
                                    top_p=values["top_p"], min_p=values["min_p"],
                                    max_new_tokens=values["max_new_tokens"], seed=seed,
                                    stop_at_think=bool(values["stop_at_think"]))
        batch_size = check_batch_size(values["batch_size"])
        if values["kv_cache_gib"] is not None and not values["kv_cache_gib"] > 0:
            raise SettingError("kv_cache_gib", f"must be > 0, got {values['kv_cache_gib']}")
        _require_backend(values["backend"])
    except SettingError as e:
        raise MathRecipeError(f"{origin.get(e.key, _flag(e.key))} {e.detail}") from None
    check_answer_format(args.answer_format)
    options = SolveOptions(
        wave=args.wave, chunk_tokens=args.chunk_tokens, early_stop=args.early_stop, min_lead=args.min_lead,
        stop_at_first_box=args.stop_at_first_box, answer_format=args.answer_format,
        time_budget_s=parse_duration(args.time_budget, "--time-budget") if args.time_budget is not None else None,
        per_problem_s=parse_duration(args.per_problem, "--per-problem") if args.per_problem is not None else None)
    if args.limit is not None and args.limit < 1:
        raise MathRecipeError(f"--limit must be >= 1 (the first N problems), got {args.limit}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise MathRecipeError(f"--out {out}: is a file; give a folder")
    model = check_model_arg(args.model)
    problems = read_problems(args.problems, args.problem_column, args.answer_column, stdin)[: args.limit]
    return dict(model=model, problems=problems, out_dir=out, settings=settings, options=options,
                backend=values["backend"], batch_size=batch_size, kv_cache_gib=values["kv_cache_gib"],
                system_prompt=system_prompt or None)


def cmd_solve(args: argparse.Namespace) -> int:
    started_at = time.monotonic()  # the budget runs from the command's start: loading the model counts
    kwargs = resolve_solve(args)
    _, lines = run_solve(**kwargs, started_at=started_at, progress=not getattr(args, "quiet", False))
    for line in lines:
        print(line)
    print(f"wrote {Path(args.out) / ANSWERS_FILE} and {Path(args.out) / LOG_FILE}")
    return 0


def add_solve_parser(sub: Any) -> None:
    """Register ``solve`` (with its ``func``) on the top-level ``mathrecipe`` subparsers."""
    from mathrecipe.evaluate.cli import add_sampling_args
    from mathrecipe.recipe import EvalConfig

    d = EvalConfig()
    p = sub.add_parser(
        "solve", help="answer problems AIMO-style: majority vote with early stopping, under a time budget",
        description="Draw up to --samples completions per problem (in parallel waves, generated --chunk-tokens "
        "at a time), stop each at </think> (--stop-at-think) or its first box (--stop-at-first-box), stop a problem "
        "once its majority cannot be overturned by the samples left (or leads by --min-lead), and keep a global "
        "clock: each problem gets its share of the time left, fewer samples when behind, and no chunk starts that "
        "would pass the budget. Writes answers.csv (id,answer) and solve.jsonl (votes, samples, tokens, seconds, "
        "why it stopped) to --out after every problem; with an answer column, prints the accuracy. Sampling "
        f"defaults: the recipe's eval section (built-in: samples {d.samples}, temperature {d.temperature}, max new "
        f"tokens {d.max_new_tokens}; or --recipe FILE), then --preset, then the flags.",
    )
    p.add_argument("--model", required=True, help="HF folder or hub id")
    p.add_argument("--problems", required=True,
                   help="JSONL/CSV/parquet file with 'id' and 'problem' columns (and optionally 'answer'), "
                   "or - for JSONL on stdin")
    p.add_argument("--out", default="solve-out", help="output folder (default: solve-out)")
    p.add_argument("--time-budget", dest="time_budget",
                   help="for all problems together, e.g. 5h (AIMO: 5h for 50 problems); loading the model counts")
    p.add_argument("--per-problem", dest="per_problem", help="the same time for each problem, e.g. 6m")
    p.add_argument("--answer-format", dest="answer_format", default=INT_FORMAT,
                   help=f"{' or '.join(ANSWER_FORMATS)}: integers 0-999 (n >= 1000 taken mod 1000; other answers "
                   f"are invalid votes), or any answer, pooled by the grader's equivalence (default {INT_FORMAT})")
    add_sampling_args(p, samples_help="most samples per problem (N of maj@N)",
                      stop_help="stop each sample at </think> and take its boxed answer from the reasoning")
    p.add_argument("--stop-at-first-box", dest="stop_at_first_box", action="store_true",
                   help="stop each sample at its first complete \\boxed{} and vote with it (checked between chunks)")
    p.add_argument("--early-stop", dest="early_stop", action=argparse.BooleanOptionalAction, default=True,
                   help="stop a problem once the samples left cannot overturn its majority (default: on; "
                   "--no-early-stop draws every sample: plain maj@N)")
    p.add_argument("--min-lead", dest="min_lead", type=int,
                   help="also stop once the leading answer leads the next by this many votes (a heuristic: "
                   "may differ from the full majority)")
    p.add_argument("--wave", default="auto", type=_wave,
                   help="samples drawn in parallel per wave. 'auto' (default): without a time limit the fewest that "
                   "could settle the vote (8 of 15 first, then what a split vote still needs: fewest tokens); with "
                   "--time-budget/--per-problem all at once, the rest cancelled once settled (least time). A number: "
                   "that many per wave")
    p.add_argument("--chunk-tokens", dest="chunk_tokens", type=int,
                   help="tokens per generate call; the clock, --stop-at-first-box and a settled vote act between "
                   "chunks (default: max new tokens / 8, at least 16; one call per wave when nothing can act "
                   "mid-wave: --wave auto without a time limit or --stop-at-first-box)")
    p.add_argument("--seed", type=int)
    p.add_argument("--system-prompt", help="'' for none (default: the recipe's data.system_prompt)")
    p.add_argument("--limit", type=int, help="first N problems only (quick checks)")
    p.add_argument("--problem-column", default="problem", help="problem column (default 'problem')")
    p.add_argument("--answer-column", default="answer",
                   help="gold answer column, if any: yields an accuracy line (default 'answer')")
    p.set_defaults(func=cmd_solve)


def main(argv: Sequence[str] | None = None) -> int:
    """``mathrecipe solve ARGS`` as a function: ``main(["--model", ..., "--problems", ...])``."""
    import logging

    parser = argparse.ArgumentParser(prog="mathrecipe")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar; only warnings in the log")
    sub = parser.add_subparsers(dest="command", required=True)
    add_solve_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet = [a for a in argv if a in ("-q", "--quiet")]
    args = parser.parse_args([*quiet, "solve", *[a for a in argv if a not in ("-q", "--quiet")]])
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except MathRecipeError as e:
        print(f"mathrecipe: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
