"""Benchmark for ``mathrecipe solve``, every row measured from the command line: `python bench/bench_solve.py`.

Each row is a fresh ``mathrecipe solve`` process, as a competition notebook runs one: interpreter start, imports,
model loading and warm-up are inside its time budget, and its wall time is measured from outside the process.
Answers are graded afterwards, outside the timed process, from the row's ``solve.jsonl``.

1. Time budget (issue 17): plain maj@N without a clock, quiet, gives the reference wall time W and correct count C.
   Then, at a budget of ``--budget-share`` x W (40 %): the global clock (``--share adaptive``, the default) and the
   FAIR equal split (``--share equal``: the same planning rules and the same sample cut when behind, only the
   per-problem share fixed), each quiet and with ``--busy`` busy-loop processes sharing the cores. Goal: the global
   clock answers >= 60 % (quiet) and >= 25 % (busy) of C correctly, and no process outlives its budget.
2. Early-stopped voting vs plain maj@N on equal samples, where samples agree (the model) and where they DISAGREE
   (``--weak-model``: an early SFT epoch): plain maj@N (all N in one call), plain maj@N in the waves early stopping
   uses (the same random stream: early stopping must give identical answers), early stop (default), and early
   stop + --min-lead 3. Tokens, samples and accuracy.

Every timed row is repeated ``--repeats`` times (min/median/max); the load average is recorded before each run.

The model: ``--model`` (e.g. the demo's ``runs/demo/grpo/final``) with ``--problems`` (JSONL with id, problem,
answer; all of them, or the first ``--n-problems``), or, without them, the toy recipe's SFT model built here and
cached under runs/bench-solve/ (git ignores runs/).

Why all the problems by default: the budget is a share of plain maj@N's wall time, and start-up (interpreter,
imports of torch and transformers, loading the model: ~4 s quiet, 7-10 s busy on a 2-core machine) is paid once
whatever the count. On the demo model 40 problems took plain maj@15 18 s, so 40 % of it (7.2 s) left ~2 s to solve
in -- a measure of import time, not of the clock (issue 17 was filed when those 40 problems took 126 s and start-up
was 3 % of it). The whole held-out split (200) keeps start-up at ~16 % of the budget quiet, still more than then.

The weak model: ``--weak-model``, else the run's SFT epoch whose recorded accuracy is nearest 0.5 (when ``--model``
lies in a run folder), else a toy model after ``WEAK_EPOCHS`` SFT epochs.

Writes bench/results/solve.json and bench/results/solve.md (``--results NAME`` for other names).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from timing import spread  # bench/timing.py (this script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = ROOT / "runs" / "bench-solve"
SFT_EPOCHS, WEAK_EPOCHS = 8, 4  # the toy recipe's 10, reduced; a weak one for disagreeing samples


# ------------------------------------------------------------------------------------------------ models


def build_model(epochs: int = SFT_EPOCHS) -> tuple[str, Path]:
    """(model folder, held-out problems file): the toy model after ``epochs`` of the toy recipe's SFT; cached."""
    from mathrecipe.files import atomic_write_json
    from mathrecipe.pipeline import prepare_data, prepare_model
    from mathrecipe.recipe import load_recipe

    out = CACHE / f"sft{epochs}"
    recipe = load_recipe(None, [f"output_dir={out}", f"sft.epochs={epochs}", "sft.eval_each_epoch=false"])
    done = out / "model.json"
    model_path = prepare_model(recipe, out / "model-init")
    paths = prepare_data(recipe, out / "data", model_path)
    if not done.is_file():
        from mathrecipe.data.problems import load_problems
        from mathrecipe.sft import run_sft

        t = time.time()
        sft = run_sft(recipe, model_path, paths["sft"], load_problems(paths["test"]), out / "sft")
        atomic_write_json(done, {"checkpoint": sft["selected_checkpoint"], "epochs": epochs,
                                 "train_seconds": time.time() - t})
    return json.loads(done.read_text())["checkpoint"], Path(paths["test"])


def weak_checkpoint(model: str) -> str | None:
    """In a run folder (``RUN/grpo/final``, ``RUN/sft/checkpoint-N``): the SFT epoch checkpoint whose recorded
    accuracy (``RUN/sft/epochs.jsonl``) is nearest 0.5 -- its samples disagree most. None outside a run."""
    for run in Path(model).resolve().parents:
        epochs = run / "sft" / "epochs.jsonl"
        if epochs.is_file():
            rows = [json.loads(x) for x in epochs.read_text().splitlines() if x.strip()]
            rows = [r for r in rows if (run / "sft" / Path(r["checkpoint"]).name).is_dir()]
            if rows:
                best = min(rows, key=lambda r: abs(r["accuracy"] - 0.5))
                return str(run / "sft" / Path(best["checkpoint"]).name)
    return None


def problem_file(source: Path, n: int | None, out: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The first ``n`` problems of ``source`` (all: None) with ids (``p<i>`` where it has none), written to
    ``out``."""
    from mathrecipe.data.io import iter_jsonl

    rows = []
    for i, (_, r) in enumerate(iter_jsonl(source)):
        if n is not None and i >= n:
            break
        rows.append({"id": str(r.get("id", f"p{i}")), "problem": r["problem"], "answer": str(r["answer"])})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out, rows


# ------------------------------------------------------------------------------------------------ one row


BUSY = ("import os\nparent = os.getppid()\nwhile os.getppid() == parent:  # ends with the bench, however it ends\n"
        "    for _ in range(10**6):\n        pass\n")


def busy_loops(n: int) -> list[subprocess.Popen]:
    """``n`` processes that spin a core each (the load a shared machine puts beside a run)."""
    return [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def grade(rows: list[dict[str, Any]], problems: list[dict[str, Any]], answer_format: str) -> list[bool]:
    """Correct per problem (in file order), graded here from solve.jsonl: the process's own grading may have been
    skipped near its budget's end. A problem without a row (none written) is not correct."""
    from mathrecipe.solve.cli import grade_row

    by_id = {str(r["id"]): dict(r) for r in rows}
    out = []
    for p in problems:
        r = by_id.get(p["id"])
        if r is None:
            out.append(False)
            continue
        grade_row(r, p["answer"], answer_format)
        out.append(bool(r["correct"]))
    return out


def run_row(name: str, args: list[str], problems: list[dict[str, Any]], answer_format: str, busy: int,
            work: Path, budget_s: float | None = None) -> dict[str, Any]:
    """One fresh ``mathrecipe solve`` process; wall time from outside; graded afterwards."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    loops = busy_loops(busy)
    try:
        time.sleep(0.5 if busy else 0.0)  # let the loops take their cores
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "mathrecipe.cli", "-q", "solve", *args, "--out", str(out)],
                              env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
    finally:
        stop(loops)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: mathrecipe solve failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "solve.jsonl").read_text().splitlines()]
    correct = grade(rows, problems, answer_format)
    stops: dict[str, int] = {}
    for r in rows:
        stops[r["stop"]] = stops.get(r["stop"], 0) + 1
    result = {
        "wall_s": wall, "load_1min": load, "busy": busy, "correct": sum(correct),
        "answered": sum(r.get("answer") is not None for r in rows), "tokens": sum(r.get("tokens", 0) for r in rows),
        "samples_per_problem": sum(r.get("samples", 0) for r in rows) / len(problems), "stops": stops,
        # when the first problem began: interpreter start, imports, model loading, thread probe (None: none began)
        "startup_s": next((r["clock_s"] - r["seconds"] for r in rows if r.get("samples") and "clock_s" in r), None),
        "answers": [next((r.get("answer") for r in rows if r["id"] == p["id"]), None) for p in problems],
        "correct_per_problem": correct,
    }
    if budget_s is not None:
        result["within_budget"] = wall <= budget_s
    print(f"  {name:34s} {'busy' if busy else 'quiet'}  correct {result['correct']:3d}/{len(problems)}  "
          f"answered {result['answered']:3d}  wall {wall:7.1f}s" + (f" (budget {budget_s:.1f}s)" if budget_s else "")
          + f"  load {load:.1f}  samples/problem {result['samples_per_problem']:.2f}  stops {stops}", flush=True)
    return result


def summarize(name: str, runs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Repeats of one configuration: each run, and min/median/max of wall time and correct answers."""
    starts = [r["startup_s"] for r in runs if r["startup_s"] is not None]
    return {"name": name, **extra, "runs": runs, "wall_s": spread([r["wall_s"] for r in runs]),
            "startup_s": spread(starts) if starts else None,
            "correct": spread([r["correct"] for r in runs]), "answered": spread([r["answered"] for r in runs]),
            "load_1min": spread([r["load_1min"] for r in runs])}


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: the toy recipe's SFT model, built here)")
    ap.add_argument("--weak-model", help="a weaker model whose samples disagree (default: see the docstring)")
    ap.add_argument("--problems", help="JSONL with problem and answer (default: the toy held-out problems)")
    ap.add_argument("--n-problems", type=int, help="first N problems (default: all; see the docstring)")
    ap.add_argument("--samples", type=int, default=15, help="N of maj@N (the second-placed AIMO-2 team's 15)")
    ap.add_argument("--temperature", type=float, default=0.6, help="the R1 convention (default 0.6)")
    ap.add_argument("--max-new-tokens", type=int, default=160, help="the toy recipe's eval.max_new_tokens")
    ap.add_argument("--answer-format", default="any", help="'any' (toy answers can be negative) or int0-999")
    ap.add_argument("--budget-share", type=float, default=0.4, help="budget = this x plain maj@N's quiet wall")
    ap.add_argument("--repeats", type=int, default=3, help="runs per timed configuration (default 3)")
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the busy rows (default 2)")
    ap.add_argument("--skip-voting", action="store_true", help="only the time-budget rows")
    ap.add_argument("--results", default="solve", help="bench/results/NAME.{json,md} (default solve)")
    args = ap.parse_args(argv)

    t_start = time.time()
    load_start = os.getloadavg()
    work = CACHE / "work"
    if args.model:
        model = str(Path(args.model).resolve())
        if not args.problems:
            raise SystemExit("--model needs --problems (JSONL with problem and answer)")
        source = Path(args.problems)
    else:
        model, source = build_model()
    weak = args.weak_model or weak_checkpoint(model) or (None if args.skip_voting else build_model(WEAK_EPOCHS)[0])
    problems_path, problems = problem_file(source, args.n_problems, work / "problems.jsonl")
    n, fmt = args.samples, args.answer_format
    base = ["--problems", str(problems_path), "--samples", str(n), "--temperature", str(args.temperature),
            "--max-new-tokens", str(args.max_new_tokens), "--stop-at-think", "--answer-format", fmt, "--seed", "0"]
    plain_args = ["--no-early-stop", "--wave", str(n), "--chunk-tokens", str(args.max_new_tokens)]

    print(f"model {model}; {len(problems)} problems, N = {n}", flush=True)
    print("plain maj@N, quiet (the reference):", flush=True)
    plain_runs = [run_row("plain maj@N", ["--model", model, *base, *plain_args], problems, fmt, 0, work)
                  for _ in range(args.repeats)]
    plain = summarize("plain maj@N", plain_runs, condition="quiet", budget_s=None)
    budget = args.budget_share * plain["wall_s"]["median"]
    reference = plain["correct"]["median"]
    print(f"budget {budget:.1f} s = {args.budget_share:.0%} of plain maj@N's median quiet wall time", flush=True)
    configs = {"global clock": ["--share", "adaptive"], "equal split (fair)": ["--share", "equal"]}
    budget_runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.repeats):  # interleaved: drifting load falls on every configuration alike
        for condition, busy in (("quiet", 0), ("busy", args.busy)):
            for name, extra in configs.items():
                budget_runs.setdefault((name, condition), []).append(run_row(
                    name, ["--model", model, *base, "--time-limit", f"{budget:.2f}s", *extra], problems, fmt,
                    busy, work, budget))
    budget_rows = [summarize(name, runs, condition=condition, budget_s=budget,
                             within_budget=all(r["within_budget"] for r in runs),
                             share_of_plain_correct=spread([r["correct"] / reference if reference else 0.0
                                                            for r in runs]))
                   for (name, condition), runs in budget_runs.items()]

    voting: dict[str, Any] = {}
    if not args.skip_voting:
        for label, m in (("agree", model), ("disagree", weak)):
            print(f"early stop vs plain maj@N, samples {label} ({m}):", flush=True)
            rows = {"plain maj@N": plain} if m == model else {}  # the reference above: the same command
            for name, extra, repeats in [
                ("plain maj@N", plain_args, args.repeats),
                ("plain maj@N, same waves", ["--no-early-stop"], 1),  # the reference stream; its wall is no baseline
                ("early stop (default)", [], args.repeats),
                ("early stop + min-lead 3", ["--min-lead", "3"], args.repeats),
            ]:
                if name not in rows:
                    rows[name] = summarize(name, [run_row(name, ["--model", m, *base, *extra], problems, fmt, 0,
                                                          work) for _ in range(repeats)])
            same, early = rows["plain maj@N, same waves"]["runs"][0], rows["early stop (default)"]["runs"][0]
            voting[label] = {"model": m, "configs": rows, "same_stream": {
                "identical_answers": sum(a == b for a, b in zip(same["answers"], early["answers"])),
                "token_ratio": early["tokens"] / max(1, same["tokens"])}}

    results = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/bench_solve.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_at_start": load_start, "load_average_at_end": os.getloadavg()},
        "model": model, "weak_model": weak,
        "setting": {"problems": len(problems), "samples": n, "temperature": args.temperature,
                    "max_new_tokens": args.max_new_tokens, "answer_format": fmt, "stop_at_think": True,
                    "repeats": args.repeats, "busy_loops": args.busy},
        "plain": plain, "budget": {"seconds": budget, "share_of_plain_wall": args.budget_share, "rows": budget_rows},
        "goal": goal(budget_rows, reference), "voting": voting, "bench_seconds": time.time() - t_start,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.results}.json").write_text(json.dumps(results, indent=2) + "\n")
    md = render(results)
    (out / f"{args.results}.md").write_text(md)
    print(md)
    return 0


def goal(rows: list[dict[str, Any]], reference: float) -> dict[str, Any]:
    """Issue 17's goal on the global clock: median correct >= 60 % (quiet) / 25 % (busy) of plain maj@N's, and no
    run past its budget."""
    out: dict[str, Any] = {}
    for r in rows:
        if r["name"] == "global clock":
            need = 0.6 if r["condition"] == "quiet" else 0.25
            share = r["correct"]["median"] / reference if reference else 0.0
            out[r["condition"]] = {"share": share, "needed": need, "met": share >= need and r["within_budget"]}
    return out


def _spread(s: dict[str, float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"


def render(res: dict[str, Any]) -> str:
    st, m, b = res["setting"], res["machine"], res["budget"]
    plain = res["plain"]
    lines = [
        f"# `mathrecipe solve` benchmark ({res['date']}, {m['cpus']} CPUs, no GPU; load average "
        f"{m['load_average_at_start'][0]:.1f} at start, {m['load_average_at_end'][0]:.1f} at end)",
        "",
        f"`{res['command']}` -- raw numbers in the matching `.json`; {res['bench_seconds'] / 60:.0f} min. Model "
        f"`{res['model']}`; {st['problems']} problems, N = {st['samples']} samples, temperature {st['temperature']}, "
        f"at most {st['max_new_tokens']} new tokens, stopped at `</think>`, `--answer-format {st['answer_format']}`. "
        "Every row is a fresh `mathrecipe solve` process (imports, model loading and warm-up inside its budget), "
        f"timed from outside the process, graded afterwards from its `solve.jsonl`; {st['repeats']} repeats, shown "
        f"as median (min-max). Busy: {st['busy_loops']} busy-loop processes share the cores during the run.",
        "",
        f"## Time budget: {b['seconds']:.1f} s = {b['share_of_plain_wall']:.0%} of plain maj@N's quiet wall time",
        "",
        "| configuration | machine | correct | share of plain's correct | answered | wall s | within budget | "
        "start-up s | load (1 min) | samples / problem | stops (first run) |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
        f"| plain maj@N, no clock | quiet | {_spread(plain['correct'], '{:.0f}')} | 1.00 | "
        f"{_spread(plain['answered'], '{:.0f}')} | {_spread(plain['wall_s'])} | -- | {_maybe(plain['startup_s'])} | "
        f"{_spread(plain['load_1min'])} | {plain['runs'][0]['samples_per_problem']:.2f} | "
        f"{_stops(plain['runs'][0]['stops'])} |",
    ]
    for r in b["rows"]:
        lines.append(
            f"| {r['name']} | {r['condition']} | {_spread(r['correct'], '{:.0f}')} | "
            f"{_spread(r['share_of_plain_correct'], '{:.2f}')} | {_spread(r['answered'], '{:.0f}')} | "
            f"{_spread(r['wall_s'])} | {'yes' if r['within_budget'] else '**NO**'} | {_maybe(r['startup_s'])} | "
            f"{_spread(r['load_1min'])} | "
            f"{r['runs'][0]['samples_per_problem']:.2f} | {_stops(r['runs'][0]['stops'])} |")
    g = res["goal"]
    startup = next((r["startup_s"] for r in b["rows"] if r["name"] == "global clock" and r["condition"] == "quiet"
                    and r["startup_s"]), None)
    if startup:
        lines += ["", f"Start-up (quiet, median) is {startup['median'] / b['seconds']:.0%} of the budget: the time "
                  "before the first problem begins is paid once, whatever the number of problems."]
    lines += [""] + [f"Goal ({cond}): the global clock answers {v['share']:.0%} of plain maj@N's correct answers "
                     f"(needed {v['needed']:.0%}) within its budget: **{'met' if v['met'] else 'NOT met'}**."
                     for cond, v in g.items()]
    lines += [
        "",
        "Global clock (`--share adaptive`, the default): each problem may use the time left / problems left, or, when "
        "that is less than a wave needs at the calls' measured speed, what the wave needs -- borrowed from later "
        "problems, so some are answered fully rather than all cut before any sample writes its answer; a started wave "
        "may run to its bound (the calls' worst recent moment), never past the budget. Equal split "
        "(`--share equal`): the same planning and sample cut when behind, but every problem's share is fixed at the "
        "time left when solving begins / problems. Both count the budget from the process's start. Start-up: when "
        "the first problem began (interpreter, imports, model loading, the CPU thread probe), from `solve.jsonl`.",
    ]
    for label, v in res["voting"].items():
        cfg = v["configs"]
        ref = cfg["plain maj@N"]["runs"][0]
        lines += [
            "",
            f"## Early stop vs plain maj@N, samples {label}: `{v['model']}`",
            "",
            "| configuration | correct | tokens | token ratio | wall s | samples / problem | stops |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, r in cfg.items():
            first = r["runs"][0]
            lines.append(f"| {name} | {first['correct']}/{st['problems']} | {first['tokens']} | "
                         f"{first['tokens'] / max(1, ref['tokens']):.2f} | {_spread(r['wall_s'])} | "
                         f"{first['samples_per_problem']:.2f} | {_stops(first['stops'])} |")
        s = v["same_stream"]
        lines += ["", f"Same random stream (early stop vs plain maj@N in the same waves): identical majority answers "
                  f"on {s['identical_answers']}/{st['problems']} problems with {1 - s['token_ratio']:.0%} fewer "
                  "tokens. That reference draws every sample in early stopping's waves: its wall time is no baseline."]
    return "\n".join(lines) + "\n"


def _maybe(s: dict[str, float] | None) -> str:
    return "--" if s is None else _spread(s)


def _stops(stops: dict[str, int]) -> str:
    return ", ".join(f"{k} {c}" for k, c in sorted(stops.items()))


if __name__ == "__main__":
    if "--render" in sys.argv:  # the .md again from the .json: --render [NAME]
        name = sys.argv[sys.argv.index("--render") + 1] if len(sys.argv) > sys.argv.index("--render") + 1 else "solve"
        (HERE / "results" / f"{name}.md").write_text(render(json.loads((HERE / "results" / f"{name}.json").read_text())))
        sys.exit(0)
    sys.exit(main())
