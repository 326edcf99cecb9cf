"""Benchmark for `mathrecipe data build` at the real size: >= 200k synthetic rows in OpenR1-Math-220k's schema.

Measures wall time (rows/s) and peak memory (this process and its map workers) of the whole build: normalise,
OpenR1 sampling, shortest correct trace by tokens, dedup, decontamination against MATH-500 / AIME 2024 / AIME 2025 /
AMC23 (local copies), and writing the sets and report. Token lengths are counted in batches and only the lengths kept.

Writes bench/results/data.json and bench/results/data.md. Run: python bench/bench_data.py [ROWS] [NUM_PROC]
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MATHRECIPE_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
WORDS = "let x be the number of ways to choose a subset so that sum is even and odd prime find remainder when".split()


def synthetic_rows(n: int, seed: int = 0):
    rng = random.Random(seed)
    for i in range(n):
        ans = str(rng.randint(0, 999))
        k = rng.randint(2, 4)
        gens = []
        for _ in range(k):
            body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 400)))
            gens.append(f"<think>\n{body}\n\\boxed{{{ans}}}\n</think>\nThe answer is \\boxed{{{ans}}}.")
        flags = [rng.random() < 0.6 for _ in range(k)]
        problem = f"Problem {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 40)))
        yield {"problem": problem, "answer": ans, "generations": gens, "correctness_math_verify": flags,
               "uuid": str(i)}


def make_fixture(path: str, n: int) -> None:
    import datasets

    datasets.Dataset.from_generator(synthetic_rows, gen_kwargs={"n": n}).to_parquet(path)


def main() -> int:
    if sys.argv[1:2] == ["--fixture"]:  # run in a child process, so its memory is not the build's
        make_fixture(sys.argv[2], int(sys.argv[3]))
        return 0
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    num_proc = int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 1)
    import subprocess

    from mathrecipe.data.build import build
    from mathrecipe.recipe import load_recipe
    from mathrecipe.toy import build_toy_model_folder, make_toy_data

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--fixture", str(d / "openr1.parquet"), str(n)], check=True,
                       stderr=subprocess.DEVNULL)
        t_gen = time.perf_counter() - t
        tok = build_toy_model_folder(d / "tok", make_toy_data(500, 10, 10))
        recipe = load_recipe(None, [
            f"data.build.output_dir={d / 'out'}", f"data.build.tokenizer={tok}",
            f"data.build.openr1={d / 'openr1.parquet'}", "data.build.openr1_hard=null", "data.build.light_r1=null",
            f"data.build.benchmark_dir={SHARED / 'benchmarks'}", "data.build.long_min_tokens=1200",
            f"data.build.num_proc={num_proc}",
        ])
        from mathrecipe.data.sources import load_source

        t = time.perf_counter()
        load_source(str(d / "openr1.parquet"))  # datasets' parquet -> Arrow cache conversion, measured on its own
        t_load = time.perf_counter() - t
        rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        report = build(recipe)  # reads the Arrow cache written above
        t_build = time.perf_counter() - t
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # map workers, or the fixture's
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = workers
    results = {
        "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "rows": n, "num_proc": num_proc,
        "generate_fixture_s": t_gen, "load_s": t_load, "build_s": t_build, "rows_per_s": n / (t_load + t_build),
        "peak_rss_after_load_mib": rss_after_load,
        "peak_rss_mib": peak_self, "peak_rss_worker_mib": peak_children,
        "sft_rows": report["sft_rows"], "steps": report["steps"],
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "data.json").write_text(json.dumps(results, indent=2) + "\n")
    md = f"""# Data build benchmark ({results['date']}, {results['cpus']} CPUs)

`python bench/bench_data.py {n} {num_proc}` -- {n:,} synthetic rows in OpenR1-Math-220k's schema (2-4 generations of
30-400 words each), the whole `mathrecipe data build` (sampling, shortest correct trace by tokens, dedup,
decontamination against MATH-500/AIME24/AIME25/AMC23, saving, report).

Time = loading the parquet source (datasets converts it to an Arrow cache) + the build itself. Peak RSS: the build's
own process (the fixture is written by a child process first); of it, {rss_after_load:,.0f} MiB is already reached by
datasets' parquet -> Arrow conversion; "largest child" is the larger of the fixture writer and the build's map workers.

| rows | num_proc | load + build | rows/s | peak RSS after loading | peak RSS (build process) | largest child | SFT rows kept |
|---:|---:|---:|---:|---:|---:|---:|---:|
| {n:,} | {num_proc} | {t_load:.0f} s + {t_build:.0f} s | **{n / (t_load + t_build):,.0f}** | {rss_after_load:,.0f} MiB | {peak_self:,.0f} MiB | {peak_children:,.0f} MiB | {report['sft_rows']:,} |
"""
    (out / "data.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
