"""Stage 2 as a bench for length control: every method of ``mathrecipe.methods`` from ONE toy SFT model.

    python bench/length_methods.py [--seeds 0,1,2] [--methods paper,dler,...] [--sft-run DIR] [--work DIR]
                                   [--jobs N] [--out bench/results] [--quick]         (make bench-length)

1. Trains the toy SFT model once (``mathrecipe sft recipes/toy.yaml``), or reuses ``--sft-run`` (a toy run folder
   whose SFT stage finished: its data/ and selected checkpoint are used, nothing in it is written).
2. For every method and seed: ``mathrecipe grpo recipes/toy.yaml grpo.method=M rewards={} seed=S`` from that
   checkpoint, on that run's data files (the GRPO prompts, the held-out test problems, the dev problems; the seed
   changes GRPO's sampling and order and the evaluation's sampling, never the problems). Each run evaluates the
   start model and the GRPO policy on the held-out test problems with the recipe's eval settings.
   Nothing is chosen here: each method's settings are fixed by its source (``mathrecipe.methods``); the one
   measured setting, the truncation limit of ``dler``/``thinkprune``, is measured on the DEV split (a percentile
   of the start model's own lengths, fixed by the method) before training. Test problems only report.
3. Writes OUT/length_methods.{json,md,png}: per method the mean tokens ratio (GRPO / start) and the accuracy
   change with paired 95 % bootstrap CIs over test problems (per problem, the change averaged over seeds) and the
   spread over seeds; per run the same; the Pareto plot (accuracy vs mean tokens, one point per method x seed) is
   ``mathrecipe compare``'s ``pareto.png`` over all runs.

Every run is a subprocess of the ``mathrecipe`` CLI and resumes when rerun (finished stages are reused).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPE = ROOT / "recipes" / "toy.yaml"

# Tiny settings for a smoke test of this script (seconds per run; the numbers then mean nothing).
QUICK = [
    "data.toy.n_sft=48", "data.toy.n_test=6", "data.toy.n_grpo=32", "data.toy.n_dev=4",
    "model.toy.hidden_size=32", "model.toy.num_layers=1", "model.toy.num_heads=2", "model.toy.intermediate_size=64",
    "sft.epochs=1", "sft.per_device_train_batch_size=8", "sft.logging_steps=2", "sft.warmup_steps=2",
    "grpo.max_steps=2", "grpo.per_device_train_batch_size=8", "grpo.num_generations=4", "grpo.logging_steps=1",
    "grpo.max_completion_length=40", "eval.samples=2", "eval.max_new_tokens=40",
]
QUICK_COSINE = ["rewards.cosine.max_len=40"]  # only for methods with the cosine reward


def mathrecipe(args: list[str], log: Path, one_thread: bool = False) -> float:
    """Run ``mathrecipe ARGS`` (this interpreter's package), logging to ``log``; the wall seconds. ``one_thread``:
    OMP_NUM_THREADS=1, for parallel jobs (the toy's numbers are the same with 1 or 2 threads on one machine)."""
    t = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if one_thread else None
    with log.open("a") as f:
        f.write(f"$ mathrecipe {' '.join(args)}\n")
        f.flush()
        subprocess.run([sys.executable, "-m", "mathrecipe.cli", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                       check=True, env=env)
    return time.time() - t


def per_problem(path: Path) -> dict[str, tuple[float, float]]:
    """{problem id: (accuracy over its samples, mean tokens)} of a samples file."""
    acc: dict[str, list[tuple[float, float]]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        acc.setdefault(str(r["id"]), []).append((float(r["correct"]), float(r["tokens"])))
    return {k: (statistics.fmean(a for a, _ in v), statistics.fmean(t for _, t in v)) for k, v in acc.items()}


def ratio_bootstrap(a: list[float], b: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, ...]:
    """(sum b / sum a, low, high): the ratio of paired means with a percentile bootstrap 95 % interval over
    problems (resampled with replacement, seeded)."""
    import numpy as np

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(resamples, len(x)))
    ratios = y[idx].sum(axis=1) / x[idx].sum(axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(y.sum() / x.sum()), float(lo), float(hi)


def measure(run: Path) -> dict[str, Any]:
    """One GRPO run against its own start evaluation (same seed), paired over the test problems."""
    from mathrecipe.evaluate.metrics import paired_bootstrap

    start, grpo = per_problem(run / "eval" / "start.samples.jsonl"), per_problem(run / "eval" / "grpo.samples.jsonl")
    ids = sorted(set(start) & set(grpo))
    report = json.loads((run / "report.json").read_text())
    return {
        "ids": ids,
        "acc_start": [start[i][0] for i in ids], "acc_grpo": [grpo[i][0] for i in ids],
        "tok_start": [start[i][1] for i in ids], "tok_grpo": [grpo[i][1] for i in ids],
        "accuracy_change": paired_bootstrap([start[i][0] for i in ids], [grpo[i][0] for i in ids]),
        "tokens_ratio": ratio_bootstrap([start[i][1] for i in ids], [grpo[i][1] for i in ids]),
        "start_accuracy": report["start"]["accuracy"], "grpo_accuracy": report["grpo"]["accuracy"],
        "limits": {k: v["limit"] for k, v in (report["grpo"].get("limits") or {}).items()},
        "steps": report["grpo"]["steps"], "stopped_early": report["grpo"].get("stopped_early"),
    }


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A method over its seeds: per problem, start and GRPO averaged over the seeds, then paired CIs over problems;
    and the spread of the per-seed values."""
    from mathrecipe.evaluate.metrics import paired_bootstrap

    ids = sorted(set.intersection(*(set(r["ids"]) for r in runs)))

    def mean_over_seeds(key: str) -> list[float]:
        return [statistics.fmean(r[key][r["ids"].index(i)] for r in runs) for i in ids]

    return {
        "seeds": len(runs),
        "accuracy_change": paired_bootstrap(mean_over_seeds("acc_start"), mean_over_seeds("acc_grpo")),
        "tokens_ratio": ratio_bootstrap(mean_over_seeds("tok_start"), mean_over_seeds("tok_grpo")),
        "accuracy_change_by_seed": [r["accuracy_change"][0] for r in runs],
        "tokens_ratio_by_seed": [r["tokens_ratio"][0] for r in runs],
    }


def _ci(v: tuple[float, ...] | list[float], fmt: str) -> str:
    return f"{v[0]:{fmt}} ({v[1]:{fmt}}, {v[2]:{fmt}})"


def render(result: dict[str, Any]) -> str:
    from mathrecipe.methods import METHODS

    reused = ("; reused with --sft-run: a finished toy run, the model `make bench-length` trains itself"
              if result.get("sft_reused") else "")
    lines = ["# Length-control methods on one toy SFT model", "",
             f"Command: `{result['command']}` ({result['machine']}; {result['wall_s'] / 60:.0f} min).", "",
             f"One SFT model ({result['start_model']}{reused}); every method runs GRPO from it for seeds "
             f"{', '.join(map(str, result['seeds']))} and is evaluated on the {result['test_problems']} held-out test "
             f"problems x {result['samples']} samples (temperature {result['temperature']}). Accuracy change and "
             "tokens ratio are GRPO against the start model evaluated in the same run (same seed), paired over "
             "problems; the method rows average each problem over the seeds first. CIs: percentile bootstrap 95 %, "
             "10,000 resamples of problems. Nothing was tuned on the test problems: each method's settings come from "
             "its source; the truncation limit is measured on the dev split.", "",
             "All methods share recipes/toy.yaml's other GRPO settings: " + ", ".join(
                 f"{k} {v}" for k, v in result["grpo"].items()) + ".", "",
             "| method | tokens ratio (95% CI) | accuracy change (95% CI) | by seed: ratio | by seed: accuracy change "
             "| source |", "|---|---:|---:|---|---|---|"]
    for m, row in result["methods"].items():
        lines.append(f"| {m} | {_ci(row['tokens_ratio'], '.2f')} | {_ci(row['accuracy_change'], '+.3f')} | "
                     f"{', '.join(f'{x:.2f}' for x in row['tokens_ratio_by_seed'])} | "
                     f"{', '.join(f'{x:+.3f}' for x in row['accuracy_change_by_seed'])} | {METHODS[m].source} |")
    lines += ["", "## Runs", "", "| method | seed | start accuracy | GRPO accuracy | tokens ratio (95% CI) | accuracy "
              "change (95% CI) | limit (tokens, measured on dev) | steps |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        lim = ", ".join(f"{v}" for v in r["limits"].values()) or "–"
        stop = " (stopped early)" if r["stopped_early"] else ""
        lines.append(f"| {r['method']} | {r['seed']} | {r['start_accuracy']:.3f} | {r['grpo_accuracy']:.3f} | "
                     f"{_ci(r['tokens_ratio'], '.2f')} | {_ci(r['accuracy_change'], '+.3f')} | {lim} | "
                     f"{r['steps']}{stop} |")
    lines += ["", "![accuracy vs mean tokens, one point per method x seed](length_methods.png)", "",
              "Pareto plot: `mathrecipe compare` over all runs (`pareto.png`): the start model once, each "
              "method x seed a point; the dashed line joins the runs no other beats on both axes.", "",
              "DLER's dynamic sampling (drop prompt groups whose rewards are all equal, sample more) is not in TRL "
              "1.16; `mathrecipe.methods` says what `dler` does instead."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from mathrecipe.files import atomic_write_json, atomic_write_text
    from mathrecipe.methods import METHODS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(m for m in METHODS if m != "custom"))
    ap.add_argument("--sft-run", help="a finished toy run (or `mathrecipe sft` run) folder to start from")
    ap.add_argument("--work", default=str(ROOT / "runs" / "length_methods"), help="where the runs go")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--jobs", type=int, default=1, help="GRPO runs at a time (each on one thread when > 1)")
    ap.add_argument("--quick", action="store_true", help="tiny settings: a smoke test of this script")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS or m == "custom"]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {', '.join(m for m in METHODS if m != 'custom')}")
    work, out = Path(args.work).resolve(), Path(args.out).resolve()
    quick, quick_cos = (QUICK, QUICK_COSINE) if args.quick else ([], [])
    t0 = time.time()
    if args.sft_run:
        sft_run = Path(args.sft_run).resolve()
    else:
        sft_run = work / "sft"
        mathrecipe(["-q", "sft", str(RECIPE), f"output_dir={sft_run}", *quick, *quick_cos], work / "sft.log")
    sft = json.loads((sft_run / "sft" / "DONE.json").read_text())
    ckpt = sft_run / "sft" / Path(sft["selected_checkpoint"]).name  # recorded relative to where that run ran
    data = sft_run / "data"
    files = ["data.source=files", f"data.sft_path={data / 'sft'}", f"data.grpo_path={data / 'grpo'}",
             f"data.test_path={data / 'test.jsonl'}", f"data.dev_path={data / 'dev.jsonl'}", "sft.enabled=false",
             f"model.name_or_path={ckpt}"]
    jobs = [(m, s) for m in methods for s in seeds]
    dirs = [work / f"{m}-s{s}" for m, s in jobs]

    def one(job: tuple[str, int]) -> dict[str, Any]:
        m, s = job
        d = work / f"{m}-s{s}"
        cos = quick_cos if "cosine" in METHODS[m].rewards else []
        wall = mathrecipe(["-q", "grpo", str(RECIPE), f"grpo.method={m}", "rewards={}", f"seed={s}",
                           f"output_dir={d}", *files, *quick, *cos], work / f"{m}-s{s}.log", args.jobs > 1)
        r = {"method": m, "seed": s, "wall_s": wall, **measure(d)}
        print(f"{m} seed {s}: tokens x{r['tokens_ratio'][0]:.2f}, accuracy {r['accuracy_change'][0]:+.3f} "
              f"({wall:.0f} s)", flush=True)
        return r

    with ThreadPoolExecutor(args.jobs) as pool:  # each job is a subprocess; threads only wait
        runs = list(pool.map(one, jobs))
    from mathrecipe.evaluate.compare import compare

    cmp = compare(dirs, work / "compare")
    first = json.loads((dirs[0] / "report.json").read_text())
    g = yaml.safe_load((dirs[0] / "recipe.yaml").read_text())["grpo"]
    given = sys.argv[1:] if argv is None else argv
    result = {
        "command": " ".join(["python bench/length_methods.py", *given]) + ("  (make bench-length)" if not given else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "wall_s": time.time() - t0, "seeds": seeds, "start_model": str(ckpt), "sft_reused": bool(args.sft_run),
        "test_problems": first["eval"]["n_problems"], "samples": first["eval"]["samples"],
        "temperature": first["eval"]["temperature"],
        "grpo": {k: g[k] for k in ("max_steps", "learning_rate", "per_device_train_batch_size", "num_generations", "beta", "temperature",
                                   "max_completion_length", "loss_type")},
        "methods": {m: pooled([r for r in runs if r["method"] == m]) for m in methods},
        "runs": [{k: v for k, v in r.items() if not k.startswith(("acc_", "tok_")) and k != "ids"} for r in runs],
        "compare": cmp["files"],
    }
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cmp["files"]["pareto"], out / "length_methods.png")
    atomic_write_json(out / "length_methods.json", result)
    atomic_write_text(out / "length_methods.md", render(result))
    print(f"wrote {out / 'length_methods.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
