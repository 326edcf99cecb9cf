"""``mathrecipe solve``: AIMO-style answers under a time limit -> answers.csv, solve.jsonl.

Every argument, the model folder and the problem file are checked before the model loads; a bad one is one line
naming the flag, file, row or column, and the fix. Sampling defaults come from the recipe's eval section (built-in,
or ``--recipe FILE``), then ``--preset``, then flags -- as in ``mathrecipe eval``, with the same flag names.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mathrecipe.errors import MathRecipeError
from mathrecipe.solve.answers import ANSWER_FORMATS, INT_FORMAT, check_answer_format, int_answer
from mathrecipe.solve.policy import format_duration, parse_duration
from mathrecipe.solve.resume import bind, solve_config, spent_seconds
from mathrecipe.solve.solver import NO_TIME, ProblemResult, SolveOptions, Solver

log = logging.getLogger(__name__)

ANSWERS_FILE, LOG_FILE = "answers.csv", "solve.jsonl"


# ------------------------------------------------------------------------------------------------ input


def read_problems(source: str, problem_column: str = "problem", answer_column: str = "answer",
                  stdin: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """solve's input through the one problem loader (``mathrecipe.data.problems``): a .jsonl or .csv file, ``-``
    for JSONL on ``stdin``, or a .json/.parquet file, a saved dataset or a hub id. Every row needs an ``id`` (made
    text) and a problem; the gold ``answer`` is optional (kept when the row has one)."""
    from mathrecipe.data.problems import load_problems

    return load_problems(source, "--problems", stdin, problem_column=problem_column, answer_column=answer_column,
                         id_required=True, text_ids=True, answer_required=False)


# ------------------------------------------------------------------------------------------------ prompts

TOO_LONG = "prompt too long"


def unsolved_row(pid: str, stop: str, **extra: Any) -> dict[str, Any]:
    """The solve.jsonl row of a problem that drew no sample (``stop`` says why)."""
    return {"id": pid, "answer": None, "stop": stop, "votes": {}, "invalid": 0, "samples": 0, "planned": 0,
            "tokens": 0, "seconds": 0.0, "calls": 0, "sample_log": [], **extra}


def too_long_row(pid: str, prompt_tokens: int, exact: bool, context: int) -> dict[str, Any]:
    """The row of a problem skipped because its prompt and max new tokens exceed the context."""
    row = unsolved_row(pid, TOO_LONG, prompt_tokens=prompt_tokens, context=context)
    if not exact:
        row["prompt_tokens_estimated"] = True  # from a prefix: see prompts.prompt_tokens
    return row


# ------------------------------------------------------------------------------------------------ output


def answers_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """``id,answer`` per problem; the answer cell is empty when no sample gave a valid answer."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "answer"])
    for r in rows:
        w.writerow([r["id"], "" if r.get("answer") is None else r["answer"]])
    return buf.getvalue()


def write_outputs(out: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """solve.jsonl, then answers.csv, each written atomically: a kill leaves the previous whole file, and
    solve.jsonl (what a rerun resumes from) is never behind answers.csv."""
    from mathrecipe.files import atomic_write_text

    atomic_write_text(out / LOG_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_text(out / ANSWERS_FILE, answers_csv(rows))


_PLAIN_INT = re.compile(r"[+-]?\d+")


def grade_row(row: dict[str, Any], gold: str | None, answer_format: str, grader: Any = None,
              use_grader: bool = True) -> None:
    """Add ``gold`` and ``correct`` to a row with a gold answer. int0-999 with an integer gold: the vote equals the
    gold's value (the competition's rule, no parser needed); two plain integers: equal values; otherwise the grader
    (``verify(gold, answer)``).
    ``use_grader=False`` (no time left for a grader call): ``correct`` is None where the grader would be needed."""
    from mathrecipe.grading import default_grader

    if gold is None:
        return
    row["gold"], answer = gold, row.get("answer")
    value = int_answer(gold) if answer_format == INT_FORMAT else None
    if answer is None:
        row["correct"] = False
    elif value is not None:
        row["correct"] = answer == value
    elif str(answer).strip() == gold.strip():
        row["correct"] = True
    elif _PLAIN_INT.fullmatch(str(answer).strip()) and _PLAIN_INT.fullmatch(gold.strip()):
        row["correct"] = int(str(answer)) == int(gold)  # two integers: equal as values (math-verify agrees)
    elif use_grader:
        row["correct"] = (grader or default_grader()).verify_many([gold], [str(answer)])[0]
    else:
        row["correct"] = None


def summary_lines(rows: Sequence[Mapping[str, Any]], elapsed_s: float, limit: str | None, kept: int) -> list[str]:
    stops: dict[str, int] = {}
    for r in rows:
        stops[r["stop"]] = stops.get(r["stop"], 0) + 1
    unanswered = sum(r.get("answer") is None for r in rows)
    lines = [f"solved {len(rows)} problems in {format_duration(elapsed_s)}"
             + (f" (time limit {limit})" if limit else "")
             + (f", {kept} of them kept from an earlier run" if kept else "")
             + f": {sum(r.get('samples', 0) for r in rows)} samples, {sum(r.get('tokens', 0) for r in rows)} "
             "tokens; stopped: " + ", ".join(f"{k} {v}" for k, v in sorted(stops.items()))
             + (f"; {unanswered} without a valid answer (empty in {ANSWERS_FILE})" if unanswered else "")]
    graded = [r for r in rows if r.get("correct") is not None]
    if graded:
        n_ok = sum(bool(r["correct"]) for r in graded)
        lines.append(f"accuracy {n_ok / len(graded):.4f} ({n_ok}/{len(graded)} problems with an answer column)")
    ungraded = sum(1 for r in rows if "gold" in r and r.get("correct") is None)
    if ungraded:
        lines.append(f"{ungraded} answers not graded (no time left for the grader): {LOG_FILE} holds them with "
                     "their gold answers")
    return lines


# ------------------------------------------------------------------------------------------------ run

EXIT_RESERVE_S = 1.0  # kept back at the time limit's end for the last write and the exit
WATCHDOG_MARGIN_S = 0.25  # the command's own process ends this long before its time limit, whatever it is doing


def run_solve(model: str, problems: Sequence[Mapping[str, Any]], out_dir: str | Path, settings: Any,
              options: SolveOptions, backend: str = "hf", generate_batch_size: Any = "auto",
              kv_cache_gib: float | None = None, system_prompt: str | None = None,
              started_at: float | None = None, progress: bool = True, exit_at_limit: bool = False,
              all_problems: Sequence[Mapping[str, Any]] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Answer ``problems`` into ``out_dir`` and return (the rows of solve.jsonl, summary lines).

    Resumes: the folder is bound to the model, settings and problem file (``all_problems``: the whole file when
    ``problems`` is a selection of it; :mod:`resume`); problems it already answered are kept and skipped, their
    time counted as spent. Prompts that do not fit the model's context with ``max_new_tokens`` are skipped with a
    row saying why. After every problem both files are rewritten with every answered problem, graded when the
    problem has a gold answer. The global time limit (``options.time_limit_s``) runs from ``started_at`` (default:
    now) less the time the kept answers used. ``exit_at_limit`` (the command's own process only): a watchdog
    writes both files and ends the process just before the time limit, whatever is still running.
    """
    from tqdm.auto import tqdm

    from mathrecipe.evaluate.generation import open_generator
    from mathrecipe.prompts import describe_overlong, overlong_prompts, prompt_tokens

    started_at = time.monotonic() if started_at is None else started_at
    out = Path(out_dir)
    universe = list(all_problems) if all_problems is not None else list(problems)
    order = {str(p["id"]): i for i, p in enumerate(universe)}
    gold = {str(p["id"]): p.get("answer") for p in universe}
    config = solve_config(model, backend, system_prompt, settings, options, universe)
    rows = bind(out, config, LOG_FILE)
    rows = {pid: r for pid, r in rows.items() if pid in order}
    kept = len(rows)
    clock_start = started_at - spent_seconds(list(rows.values()))  # the time limit's clock carries over reruns
    for pid, r in rows.items():
        r.pop("gold", None)
        r.pop("correct", None)
        grade_row(r, gold[pid], options.answer_format)

    def ordered() -> list[dict[str, Any]]:
        return sorted(rows.values(), key=lambda r: order[str(r["id"])])

    todo = [p for p in problems if str(p["id"]) not in rows]
    if kept:
        log.info("resuming %s: %d answered problems kept, %d to solve", out, kept, len(todo))
    elapsed = lambda: time.monotonic() - started_at  # noqa: E731
    limit_end = (clock_start + options.time_limit_s - EXIT_RESERVE_S) if options.time_limit_s else math.inf
    watchdog = None
    if exit_at_limit and options.time_limit_s is not None and todo:
        from mathrecipe.solve.clock import Watchdog

        def fire() -> None:  # the time limit's end is here: what is answered stays, the rest had no time
            for p in problems:
                rows.setdefault(str(p["id"]), unsolved_row(str(p["id"]), NO_TIME))
            out.mkdir(parents=True, exist_ok=True)
            write_outputs(out, ordered())
            answered = sum(1 for r in rows.values() if r.get("stop") != NO_TIME)
            print(f"mathrecipe: --time-limit reached after {elapsed():.1f} s: wrote {out / ANSWERS_FILE} ({answered} "
                  f"of {len(rows)} problems answered)", file=sys.stderr, flush=True)

        watchdog = Watchdog(clock_start + options.time_limit_s - WATCHDOG_MARGIN_S, fire).start()
    guard = watchdog.lock if watchdog is not None else contextlib.nullcontext()
    try:
        if todo and limit_end <= time.monotonic():  # start-up took the whole time limit: loading the model would overrun
            log.warning("--time-limit: no time left after start-up (%.1f s); no problem solved", elapsed())
            with guard:
                rows.update({str(p["id"]): unsolved_row(str(p["id"]), NO_TIME) for p in todo})
            todo = []
        if todo:
            tokenizer, gen = open_generator(backend, model, generate_batch_size, kv_cache_gib, settings.seed)
            context = _context(gen, model)
            measured = prompt_tokens(tokenizer, [str(p["problem"]) for p in todo], system_prompt, context)
            long = set(overlong_prompts([n for _, n in measured], settings.max_new_tokens, context))
            if long:
                long_ids = [str(todo[i]["id"]) for i in sorted(long)]
                log.warning(describe_overlong(
                    "--problems", [f"{order[pid] + 1} (id {pid!r})" for pid in long_ids],
                    [measured[i][1] for i in sorted(long)], settings.max_new_tokens, context,  # type: ignore[arg-type]
                    f"skipped with an empty answer ('{TOO_LONG}' in {LOG_FILE}); shorten the problem or lower "
                    "--max-new-tokens"))
                with guard:
                    for i in sorted(long):
                        pid = str(todo[i]["id"])
                        rows[pid] = too_long_row(pid, measured[i][1], measured[i][0] is not None, context)  # type: ignore
            out.mkdir(parents=True, exist_ok=True)
            with guard:
                write_outputs(out, ordered())
            todo_ok = [(p, ids) for i, (p, (ids, _)) in enumerate(zip(todo, measured)) if i not in long]
            solver = Solver(gen, tokenizer, settings, options, system_prompt=system_prompt, started_at=clock_start,
                            reserve_s=EXIT_RESERVE_S)
            if todo_ok and solver.end() > time.monotonic():
                threads = solver.calibrate_cpu_threads(todo_ok[0][1])  # type: ignore[arg-type]
                if threads:
                    log.info("CPU threads for generation: %d of %d (seconds a decode step: %s)", threads["threads"],
                             threads["default"], ", ".join(f"{v:.3f} on {k}" for k, v in threads["per_step_s"].items()))
            selected = sum(1 for p in problems if str(p["id"]) in rows)
            with tqdm(total=len(problems), initial=selected, desc="solve", unit="problem", disable=not progress,
                      file=sys.stderr) as bar:

                def show() -> None:
                    left = solver.time_left()
                    bar.set_postfix_str(f"time left {format_duration(left)}" if left is not None
                                        else f"elapsed {format_duration(elapsed())}")

                def done(r: ProblemResult) -> None:
                    row = r.row()
                    row["clock_s"] = round(time.monotonic() - clock_start, 3)
                    left = solver.time_left()
                    grade_row(row, gold[r.id], options.answer_format, solver.grader,
                              use_grader=left is None or left > GRADER_MARGIN_S)
                    with guard:
                        rows[r.id] = row
                        if r.stop != NO_TIME:  # nothing to keep: written once at the end, not rewritten per problem
                            write_outputs(out, ordered())
                    bar.update(1)
                    show()

                solver.solve([p for p, _ in todo_ok], on_problem=done, on_call=show,
                             prompts=[ids for _, ids in todo_ok])  # type: ignore[misc]
        out.mkdir(parents=True, exist_ok=True)
        with guard:
            write_outputs(out, ordered())
        limit = (format_duration(options.time_limit_s) if options.time_limit_s
                  else f"{format_duration(options.per_problem_s)} a problem" if options.per_problem_s else None)
        final = ordered()
        return final, summary_lines(final, elapsed(), limit, kept)
    finally:
        if watchdog is not None:
            watchdog.cancel()


GRADER_MARGIN_S = 6.0  # a grader call may take its 5 s timeout: not started this close to the time limit's end


def _context(gen: Any, model: str) -> int | None:
    """The model's context window (``prompts.model_context``), from the loaded model or its config."""
    from mathrecipe.prompts import model_context

    config = getattr(getattr(gen, "model", None), "config", None)
    if config is None:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(model)
        except (OSError, ValueError):
            return None
    return model_context(config)


# ------------------------------------------------------------------------------------------------ CLI


def _wave(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text  # "auto", or a word SolveOptions refuses in one line


def resolve_solve(args: argparse.Namespace, stdin: Iterable[str] | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`run_solve` from the command line: sampling from the one resolver (the recipe's
    eval section, then ``--preset``, then flags, as ``mathrecipe eval``), then solve's own flags. Checks every value
    and reads the problems; loads no model."""
    from mathrecipe.evaluate.run import check_model_arg
    from mathrecipe.evaluate.sampling import resolve_sampling

    s = resolve_sampling(args)
    check_answer_format(args.answer_format)
    options = SolveOptions(
        wave=args.wave, chunk_tokens=args.chunk_tokens, early_stop=args.early_stop, min_lead=args.min_lead,
        stop_at_first_box=args.stop_at_first_box, answer_format=args.answer_format, share=args.share,
        time_limit_s=parse_duration(args.time_limit, "--time-limit") if args.time_limit is not None else None,
        per_problem_s=parse_duration(args.per_problem, "--per-problem") if args.per_problem is not None else None)
    if args.limit is not None and args.limit < 1:
        raise MathRecipeError(f"--limit must be >= 1 (the first N problems), got {args.limit}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise MathRecipeError(f"--out {out}: is a file; give a folder")
    model = check_model_arg(args.model)
    problems = read_problems(args.problems, args.problem_column, args.answer_column, stdin)
    return dict(model=model, problems=problems[: args.limit], all_problems=problems, out_dir=out,
                settings=s.settings, options=options, backend=s.values["backend"],
                generate_batch_size=s.generate_batch_size,
                kv_cache_gib=s.values["kv_cache_gib"], system_prompt=s.system_prompt)


def _own_process() -> bool:
    """Whether this process was started as the mathrecipe command (the console script, ``python -m
    mathrecipe.cli`` or ``python -m mathrecipe.solve``) rather than by a caller that imported it."""
    import mathrecipe

    arg0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if arg0 is None:
        return False
    package = Path(mathrecipe.__file__).resolve().parent
    return arg0.name == "mathrecipe" or package in arg0.resolve().parents


def cmd_solve(args: argparse.Namespace) -> int:
    from mathrecipe.solve.clock import process_started_at

    # As a command, a time limit covers the whole process: interpreter start, imports, loading. Called from Python (a
    # notebook, a test), it runs from this call: run_solve(started_at=...) counts from any other moment.
    own = _own_process()
    started_at = process_started_at() if own else time.monotonic()
    kwargs = resolve_solve(args)
    _, lines = run_solve(**kwargs, started_at=started_at, progress=not getattr(args, "quiet", False),
                         exit_at_limit=own)
    for line in lines:
        print(line)
    print(f"wrote {Path(args.out) / ANSWERS_FILE} and {Path(args.out) / LOG_FILE}")
    if kwargs["options"].time_limit_s is not None and _own_process():
        # Every file is written (atomically) and closed: end without the interpreter's teardown of torch and
        # transformers, which took 1-3 s on a loaded 2-core machine -- past the time limit. Grading workers end on
        # their closed stdin.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(0)
    return 0


def add_solve_parser(sub: Any) -> None:
    """Register ``solve`` (with its ``func``) on the top-level ``mathrecipe`` subparsers."""
    from mathrecipe.evaluate.sampling import add_renamed_flags, add_sampling_args
    from mathrecipe.recipe import EvalConfig

    d = EvalConfig()
    p = sub.add_parser(
        "solve", help="answer problems AIMO-style: majority vote with early stopping, under a time limit",
        description="Draw up to --samples completions per problem (in parallel waves, generated --chunk-tokens "
        "at a time), stop each at </think> (--stop-at-think) or its first box (--stop-at-first-box), stop a problem "
        "once its majority cannot be overturned by the samples left (or leads by --min-lead), and keep a global "
        "clock from the process's start: each problem gets its share of the time left (or borrows what a first "
        "answer needs at the measured speed), when behind the most samples its share can buy, and no chunk starts "
        "that would pass the time limit (--time-limit). Writes answers.csv (id,answer) and solve.jsonl (votes, samples, tokens, "
        "seconds, why it stopped) "
        "to --out after every problem; rerun the same command to resume (answered problems are kept); a prompt too "
        "long for the model is skipped with its row saying so; with an answer column, prints the accuracy. Sampling "
        f"defaults: the recipe's eval section (built-in: samples {d.samples}, temperature {d.temperature}, max new "
        f"tokens {d.max_new_tokens}; or --recipe FILE), then --preset, then the flags.",
    )
    p.add_argument("--model", required=True, help="HF folder or hub id")
    p.add_argument("--problems", required=True,
                   help="JSONL/CSV/parquet file with 'id' and 'problem' columns (and optionally 'answer'), "
                   "or - for JSONL on stdin")
    p.add_argument("--out", default="solve-out", help="output folder (default: solve-out)")
    p.add_argument("--time-limit", dest="time_limit",
                   help="for all problems together, e.g. 5h (AIMO: 5h for 50 problems), counted from the process's "
                   "start: imports and loading the model count, and the command exits within it")
    add_renamed_flags(p, {"--time-budget": "--time-limit"})  # "budget" is a number of tokens (eval --budgets)
    p.add_argument("--per-problem", dest="per_problem", help="the same time for each problem, e.g. 6m")
    p.add_argument("--share", default="adaptive",
                   help="how --time-limit is shared: 'adaptive' (default): each problem may use the time left / "
                   "problems left, or what a first answer needs at the measured speed (borrowed from later problems); "
                   "'equal': the time left when solving begins / problems, fixed (a baseline: bench/bench_solve.py)")
    # "-3m" would otherwise be taken for an option ("expected one argument"): read as a value, it gets the
    # one-line "must be a positive duration". The parser has no option that looks like a negative number.
    p._negative_number_matcher = re.compile(r"^-\d")
    p.add_argument("--answer-format", dest="answer_format", default=INT_FORMAT,
                   help=f"{' or '.join(ANSWER_FORMATS)}: integers 0-999 (n >= 1000 taken mod 1000; other answers "
                   f"are invalid votes), or any answer, pooled by the grader's equivalence (default {INT_FORMAT})")
    add_sampling_args(p, helps={"samples": "most samples per problem (N of maj@N)",
                                "stop_at_think": "stop each sample at </think> and take its boxed answer from the "
                                "reasoning"})
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
                   "--time-limit/--per-problem all at once, the rest cancelled once settled (least time). A number: "
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
