"""Is the toy reproduction robust? Run the toy recipe for several seeds and under another CPU kernel choice.

    python bench/toy_robustness.py [--seeds 0,1,2] [--jobs 1] [--out bench/results] [--quick]   (make bench-toy)

Each run is a subprocess ``mathrecipe run RECIPE seed=S output_dir=...``. Besides seeds 0, 1, 2 with this
machine's kernels, seed 0 runs again with ``ATEN_CPU_CAPABILITY`` one step down (AVX512 -> avx2, AVX2 -> default),
so torch picks other vectorised kernels, as another machine would: the toy's SFT breakthrough once depended on
exactly that arithmetic. The script checks that the variant really changed the numbers (the SFT training loss
logged at the same steps). On a CUDA machine, seed 0 also runs on the GPU (the recipe's bf16 + checkpointing),
while the CPU runs are kept off it.

Writes OUT/toy_robustness.json and OUT/toy_robustness.md: per run the per-epoch SFT accuracy, the GRPO token ratio
and accuracy change, the verdicts of ``mathrecipe.report.verdicts`` and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Tiny settings for a smoke test of this script (seconds per run; the verdicts are then meaningless).
QUICK = [
    "data.toy.n_sft=48", "data.toy.n_test=6", "data.toy.n_grpo=32",
    "model.toy.hidden_size=32", "model.toy.num_layers=1", "model.toy.num_heads=2", "model.toy.intermediate_size=64",
    "sft.epochs=2", "sft.per_device_train_batch_size=8", "sft.logging_steps=2", "sft.warmup_steps=2",
    "grpo.max_steps=2", "grpo.per_device_train_batch_size=8", "grpo.num_generations=4", "grpo.logging_steps=1",
    "grpo.max_completion_length=40", "rewards.cosine.max_len=40",
    "eval.samples=2", "eval.max_new_tokens=40",
]

# What the toy aims for, beyond report.py's pass thresholds (other machines will differ again).
AIM_LAST_ACCURACY = 0.80
AIM_TOKEN_RATIO = 0.62


def kernel_variant(capability: str) -> str | None:
    """The ``ATEN_CPU_CAPABILITY`` one step below this CPU's (``torch.backends.cpu.get_cpu_capability()``).

    AVX512 -> "avx2", AVX2 -> "default" (non-vectorised kernels), anything else that is vectorised (e.g. an ARM
    SVE/NEON build) -> "default"; a CPU already on the default kernels has no lower choice: None.
    """
    cap = capability.upper()
    if cap.startswith("AVX512"):
        return "avx2"
    if cap == "DEFAULT" or not cap:
        return None
    return "default"


def plan_runs(seeds: list[int], capability: str, cuda: bool) -> list[dict[str, Any]]:
    """The runs to make: each seed on this machine's kernels, seed ``seeds[0]`` under the lower kernel choice,
    and, on a CUDA machine, seed ``seeds[0]`` on the GPU."""
    runs = [{"name": f"seed{s}", "seed": s, "device": "cpu", "env": {}} for s in seeds]
    variant = kernel_variant(capability)
    if variant is not None:
        runs.append({"name": f"seed{seeds[0]}-kernels-{variant}", "seed": seeds[0], "device": "cpu",
                     "env": {"ATEN_CPU_CAPABILITY": variant}})
    if cuda:
        runs.append({"name": f"seed{seeds[0]}-gpu", "seed": seeds[0], "device": "cuda", "env": {}})
    return runs


def summarize_report(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers this benchmark tracks, from one run's report.json, with mathrecipe.report's verdicts."""
    from mathrecipe.report import verdicts

    sft = report.get("sft") or {}
    epochs = [{"epoch": e["epoch"], "accuracy": e.get("accuracy"), "mean_tokens": e.get("mean_tokens")}
              for e in sft.get("epochs", [])]
    start, grpo = report.get("start") or {}, report.get("grpo") or {}
    ratio = change = None
    if start.get("mean_tokens") and grpo.get("mean_tokens") is not None:
        ratio = grpo["mean_tokens"] / start["mean_tokens"]
        change = grpo["accuracy"] - start["accuracy"]
    v = verdicts(report)
    return {
        "sft_epochs": epochs,
        "sft_accuracy": [e["accuracy"] for e in epochs],
        "start": {k: start.get(k) for k in ("name", "accuracy", "mean_tokens")},
        "grpo": {k: grpo.get(k) for k in ("steps", "accuracy", "mean_tokens", "stopped_early")},
        "grpo_token_ratio": ratio,
        "grpo_accuracy_change": change,
        "verdicts": v,
        "reproduced": bool(v) and all(x["reproduced"] for x in v),
        "timings_s": report.get("timings_s"),
    }


def sft_losses(run_dir: Path) -> dict[int, float]:
    """SFT training loss by logged step, from the last checkpoint's trainer_state.json (empty if none)."""
    states = sorted((run_dir / "sft").glob("checkpoint-*/trainer_state.json"),
                    key=lambda p: int(p.parent.name.split("-")[1]))
    if not states:
        return {}
    log = json.loads(states[-1].read_text()).get("log_history", [])
    return {int(h["step"]): float(h["loss"]) for h in log if "loss" in h}


def kernel_check(base: dict[int, float], variant: dict[int, float]) -> dict[str, Any]:
    """Did the kernel variant change the arithmetic? Compares the SFT losses both runs logged at the same steps;
    ``step`` is the first step where they differ (or the last compared one, if none does)."""
    common = sorted(set(base) & set(variant))
    if not common:
        return {"compared": False, "changed": None, "reason": "no SFT loss logged by both runs"}
    diff = [s for s in common if base[s] != variant[s]]
    step = diff[0] if diff else common[-1]
    return {"compared": True, "steps_compared": len(common), "changed": bool(diff), "step": step,
            "loss_default": base[step], "loss_variant": variant[step]}


def kernels_seen(env: dict[str, str]) -> str:
    """The CPU capability torch reports in a fresh process with ``env`` (checks that a variant took effect)."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def run_one(run: dict[str, Any], recipe: str, runs_dir: Path, threads: int, extra: list[str]) -> dict[str, Any]:
    """One ``mathrecipe run`` in a subprocess; returns the run's summary (or its failure, never a made-up number)."""
    out = runs_dir / run["name"]
    env = {**os.environ, **run["env"], "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    if run["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run stays on the CPU even on a GPU machine
    cmd = [sys.executable, "-m", "mathrecipe.cli", "-q", "run", recipe, f"seed={run['seed']}",
           f"output_dir={out}", *extra]
    row: dict[str, Any] = {k: run[k] for k in ("name", "seed", "device")}
    row.update(kernels=kernels_seen(env) if run["device"] == "cpu" else "cuda", env_changes=run["env"],
               threads=threads, output_dir=str(out), command=" ".join(cmd[2:]))
    t = time.time()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    row["wall_s"] = round(time.time() - t, 1)
    if proc.returncode != 0:
        row.update(ok=False, returncode=proc.returncode, error=(proc.stderr or proc.stdout)[-2000:])
        return row
    report = json.loads((out / "report.json").read_text())
    row.update(ok=True, **summarize_report(report))
    row["_losses"] = sft_losses(out)
    return row


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# Toy reproduction robustness ({result['date']})", "",
             f"`{result['command']}` -- raw numbers in `toy_robustness.json`.", "",
             f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), torch {m['torch']} with {m['cpu_capability']} kernels; "
             f"{result['jobs']} run(s) at a time, {result['threads_per_run']} thread(s) each "
             "(wall times of parallel runs share the cores).", ""]
    lines += [f"Recipe: `{result['recipe']}`" + (f" with {' '.join(result['extra'])}" if result["extra"] else ""),
              "", "Pass (report.py): last SFT epoch >= 0.70 and >= epoch 1 + 0.30; GRPO tokens <= 0.70x and accuracy "
              f">= SFT's - 0.03. Aim: last epoch >= {AIM_LAST_ACCURACY}, token ratio <= {AIM_TOKEN_RATIO}.", ""]
    lines += ["| run | kernels | SFT accuracy by epoch | GRPO tokens (ratio) | GRPO accuracy change | effect 1 | "
              "effect 2 | wall |", "|---|---|---|---|---:|---|---|---:|"]
    for r in result["runs"]:
        if not r["ok"]:
            lines.append(f"| {r['name']} | {r['kernels']} | FAILED (exit {r['returncode']}) | | | | | "
                         f"{r['wall_s']:.0f} s |")
            continue
        acc = " ".join(_fmt(a, ".2f") for a in r["sft_accuracy"])
        st, g = r["start"], r["grpo"]
        tok = (f"{_fmt(st['mean_tokens'], '.1f')} -> {_fmt(g['mean_tokens'], '.1f')} "
               f"({_fmt(r['grpo_token_ratio'], '.2f')}x)")
        eff = {v["effect"].split(" (")[0]: v for v in r["verdicts"]}
        cells = ["–" if (v := eff.get(name)) is None else ("yes" if v["reproduced"] else "**NO**")
                 for name in ("effect 1", "effect 2")]
        lines.append(f"| {r['name']} | {r['kernels']} | {acc} | {tok} | {_fmt(r['grpo_accuracy_change'], '+.3f')} | "
                     f"{cells[0]} | {cells[1]} | {r['wall_s']:.0f} s |")
    s = result["summary"]
    lines += ["", f"**All runs reproduce both effects: {'yes' if s['all_reproduced'] else 'NO'}.** "
              f"Worst last-epoch accuracy {_fmt(s['min_last_accuracy'], '.3f')}, worst gain over epoch 1 "
              f"{_fmt(s['min_gain'], '.3f')}, worst token ratio {_fmt(s['max_token_ratio'], '.3f')}, worst accuracy "
              f"change {_fmt(s['min_accuracy_change'], '+.3f')}."]
    k = result["kernel_check"]
    if k is None:
        lines.append("\nKernel variant: none run (this CPU has no lower kernel choice).")
    elif not k["compared"]:
        lines.append(f"\nKernel variant: could not be checked ({k['reason']}).")
    elif k["changed"]:
        lines.append(f"\nKernel variant changed the arithmetic: SFT training loss at step {k['step']} "
                     f"{k['loss_default']!r} with this machine's kernels, {k['loss_variant']!r} with the variant.")
    else:
        lines.append("\nKernel variant did NOT change the arithmetic (identical SFT losses): it is not a test of "
                     "another machine.")
    lines.append("")
    lines.append(result["gpu"])
    for r in result["runs"]:
        for v in r.get("verdicts", []):
            if not v["reproduced"]:
                lines.append(f"\n- {r['name']}: {v['effect']} not reproduced ({v['numbers']}): {v['cause']}")
    return "\n".join(lines) + "\n"


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r["ok"]]
    lasts = [r["sft_accuracy"][-1] for r in ok if r["sft_accuracy"] and r["sft_accuracy"][-1] is not None]
    gains = [r["sft_accuracy"][-1] - r["sft_accuracy"][0] for r in ok
             if r["sft_accuracy"] and None not in (r["sft_accuracy"][0], r["sft_accuracy"][-1])]
    ratios = [r["grpo_token_ratio"] for r in ok if r["grpo_token_ratio"] is not None]
    changes = [r["grpo_accuracy_change"] for r in ok if r["grpo_accuracy_change"] is not None]
    return {
        "all_reproduced": len(ok) == len(runs) and all(r["reproduced"] for r in ok),
        "failed_runs": [r["name"] for r in runs if not r["ok"]],
        "min_last_accuracy": min(lasts, default=None),
        "min_gain": min(gains, default=None),
        "max_token_ratio": max(ratios, default=None),
        "min_accuracy_change": min(changes, default=None),
    }


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--recipe", default="recipes/toy.yaml", help="recipe YAML (default recipes/toy.yaml)")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for toy_robustness.{json,md}")
    p.add_argument("--runs-dir", default="runs/toy-robustness", help="folder for the runs' outputs")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time; the CPU cores are split between them")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test of this script)")
    p.add_argument("overrides", nargs="*", help="extra key=value recipe overrides for every run")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not seeds:
        p.error("--seeds is empty")
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    recipe = str((ROOT / args.recipe) if not Path(args.recipe).is_absolute() else args.recipe)
    if not Path(recipe).is_file():
        p.error(f"recipe not found: {args.recipe}")
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    cuda = torch.cuda.is_available()
    runs = plan_runs(seeds, capability, cuda)
    cpus = os.cpu_count() or 1
    threads = max(1, cpus // args.jobs)
    extra = (QUICK if args.quick else []) + list(args.overrides)
    runs_dir = Path(args.runs_dir).resolve()
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda r: run_one(r, recipe, runs_dir, threads, extra), runs))
    losses = {r["name"]: r.pop("_losses", {}) for r in rows}
    variant = next((r for r in rows if r["env_changes"].get("ATEN_CPU_CAPABILITY")), None)
    check = None
    if variant is not None:
        check = kernel_check(losses.get(f"seed{variant['seed']}", {}), losses.get(variant["name"], {}))
    gpu = next((r for r in rows if r["device"] == "cuda"), None)
    gpu_line = (f"GPU: {torch.cuda.get_device_name(0)}, run {gpu['name']} above." if gpu else
                "GPU: not run -- no CUDA device on this machine (none is available to this project now); on a "
                "CUDA machine this script adds a GPU row.")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/toy_robustness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "recipe": args.recipe, "extra": extra, "jobs": args.jobs, "threads_per_run": threads,
        "machine": {"cpus": cpus, "cpu_model": _cpu_model(), "cpu_capability": capability, "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform(),
                    "cuda": torch.cuda.get_device_name(0) if cuda else None},
        "runs": rows, "kernel_check": check, "gpu": gpu_line, "summary": summarize_runs(rows),
        "total_wall_s": round(time.time() - t0, 1),
    }
    out = Path(args.out)
    _write_atomic(out / "toy_robustness.json", json.dumps(result, indent=2) + "\n")
    md = render_markdown(result)
    _write_atomic(out / "toy_robustness.md", md)
    print(md)
    for r in rows:
        if not r["ok"]:
            print(f"run {r['name']} failed (exit {r['returncode']}):\n{r['error']}", file=sys.stderr)
    return 1 if result["summary"]["failed_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
