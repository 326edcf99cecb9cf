"""Benchmark for `mathrecipe data build` at the real size: >= 200k synthetic rows in OpenR1-Math-220k's schema.

Measures wall time (rows/s) and peak memory (this process and its map workers) of the whole build: normalise,
OpenR1 sampling, shortest correct trace by tokens, dedup, decontamination against MATH-500 / AIME 2024 / AIME 2025 /
AMC23 (local copies), and writing the sets and report. Token lengths are counted in batches and only the lengths kept.

Then, on its own: decontamination and the dedup key on 50,000 real problem texts (the 195 historical AIME rows of
the shared data, cycled and numbered) against the same benchmarks at min_overlap 0.5, with the math-aware
normaliser and item-share rule, and with the baseline they replaced (whitespace-only normalising, any-gram share of
the text's own n-grams), in the same process.

Writes bench/results/data.json and bench/results/data.md. Run: python bench/bench_data.py [ROWS] [NUM_PROC]
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MATHRECIPE_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
DECONTAM_ROWS = 50_000
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


# The baseline: the normaliser and match rule before math-aware normalising (kept here to measure against).
_BASE_SPACE = re.compile(r"\\(?:[,;:!> ]|quad|qquad|enspace|thinspace)|~")


def _baseline_normalise(text: str) -> str:
    return " ".join(_BASE_SPACE.sub(" ", text.lower()).split())


def _baseline_grams(text: str, n: int) -> list[str]:
    w = _baseline_normalise(text).split()
    return [" ".join(w)] if 0 < len(w) < n else [" ".join(w[i : i + n]) for i in range(len(w) - n + 1)]


def _baseline_match(text: str, index: dict[str, str], n: int, min_overlap: float) -> str | None:
    grams = _baseline_grams(text, n)
    hits = [g for g in grams if g in index]
    if not hits or len(hits) < min_overlap * len(grams):
        return None
    return Counter(index[g] for g in hits).most_common(1)[0][0]


def bench_decontam(n: int) -> dict:
    """Dedup key + decontamination (0.5) per problem on n real problem texts: current code vs the baseline."""
    from mathrecipe.data.benchmarks import load_benchmark
    from mathrecipe.data.decontam import build_index, first_match, normalise_text

    aime = [json.loads(x)["problem"] for x in
            (SHARED / "train-samples" / "deepscaler_aime1983_2023_train_sample.jsonl").read_text().splitlines()]
    texts = [f"{aime[i % len(aime)]} (copy {i})" for i in range(n)]
    benches = dict(load_benchmark(b, SHARED / "benchmarks") for b in ("math500", "aime24", "aime25", "amc23"))
    base_index: dict[str, str] = {}
    for name, problems in benches.items():
        for p in problems:
            for g in _baseline_grams(p["problem"], 8):
                base_index.setdefault(g, f"{name}:{p['id']}")
    index = build_index(benches, 8)
    t = time.perf_counter()
    flagged_base = sum(_baseline_match(x, base_index, 8, 0.5) is not None for x in texts)
    keys_base = len({_baseline_normalise(x) for x in texts})
    t_base = time.perf_counter() - t
    t = time.perf_counter()
    flagged = sum(first_match(x, index, 0.5) is not None for x in texts)
    keys = len({normalise_text(x) for x in texts})
    t_new = time.perf_counter() - t
    return {"rows": n, "baseline_s": t_base, "current_s": t_new, "baseline_rows_per_s": n / t_base,
            "current_rows_per_s": n / t_new, "slowdown": t_new / t_base, "flagged_baseline": flagged_base,
            "flagged_current": flagged, "distinct_keys_baseline": keys_base, "distinct_keys_current": keys}


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
            "data.build.sources=" + json.dumps([{"kind": "openr1", "path": str(d / "openr1.parquet"),
                                                 "sample": {"long_min_tokens": 1200}}]),
            f"data.build.benchmark_dir={SHARED / 'benchmarks'}",
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
    dc = bench_decontam(DECONTAM_ROWS)
    results = {
        "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "rows": n, "num_proc": num_proc,
        "generate_fixture_s": t_gen, "load_s": t_load, "build_s": t_build, "rows_per_s": n / (t_load + t_build),
        "peak_rss_after_load_mib": rss_after_load,
        "peak_rss_mib": peak_self, "peak_rss_worker_mib": peak_children,
        "sft_rows": report["sft_rows"], "steps": report["steps"], "decontam": dc,
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

Decontamination alone (one process): dedup key + match at min_overlap 0.5 against MATH-500/AIME24/AIME25/AMC23 on
{dc['rows']:,} real problem texts (the 195 historical AIME rows, cycled and numbered).

| rule | time | rows/s | flagged | distinct dedup keys |
|---|---:|---:|---:|---:|
| baseline (whitespace-only normalising, share of the text's n-grams) | {dc['baseline_s']:.1f} s | {dc['baseline_rows_per_s']:,.0f} | {dc['flagged_baseline']:,} | {dc['distinct_keys_baseline']:,} |
| current (math-aware normalising, share of the item's or the text's n-grams) | {dc['current_s']:.1f} s | {dc['current_rows_per_s']:,.0f} | {dc['flagged_current']:,} | {dc['distinct_keys_current']:,} |

Current / baseline time: **{dc['slowdown']:.2f}x**.
"""
    (out / "data.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
