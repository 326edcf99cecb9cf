"""Benchmarks for evaluation (not timed tests): `python bench/bench_eval.py` (or `make bench`).

1. Generation throughput on CPU, the real SmolLM2-135M-Instruct (decoding speed depends on model size; `--model toy`
   for the 1.1M toy): mathrecipe's HFGenerator against PLAIN batched ``model.generate`` with the same settings
   (same prompts, batch size, max_new_tokens, sampling, dtype, left padding; EOS off in both so both generate
   exactly prompts x max_new_tokens tokens). The generator differs by sorting prompts by length (less padding)
   and, on CPU, a preallocated (static) KV cache when it fits the budget. Each setting runs in its own process
   (peak RSS is its own).
2. Grading on EQUAL work: the hang-proof grader (worker processes, a hard bound per answer) against raw in-process
   math-verify on the same DISTINCT answer pairs from MATH-500 (a fresh grader each repeat: no cached verdicts),
   so both make the same verifications; then, labelled as such, the original 1,000-pair list where the grader's
   cache verifies repeated pairs once and raw math-verify verifies all.
3. Token offsets of boxed answers (accuracy at a token budget): one streaming decode vs bisection with full
   decodes, on a 32k-token completion made of MATH-500 solutions (the tokenizer's speed matters, not the model's).

Every timing is repeated (--repeats, alternating the settings), reported as median (min-max), with /proc/loadavg
before and after. Writes bench/results/eval.json and eval.md.

    python bench/bench_eval.py [--model real|toy] [--repeats 3] [--prompts 16] [--max-new-tokens 64] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from timing import loadavg, spread  # bench/timing.py (this script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MATHRECIPE_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
GEN_SETTINGS = ("plain_generate", "mathrecipe")


def _fmt(s: dict[str, float], digits: int = 0) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


# ------------------------------------------------------------------------------------------- generation


def _model(kind: str, tmp: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind == "toy":
        from mathrecipe.toy import build_toy_model_folder, make_toy_data

        path = build_toy_model_folder(tmp, make_toy_data(n_sft=500, n_test=8, n_grpo=10, seed=0))
    else:
        from mathrecipe.realmodel import real_model_dir

        path = real_model_dir()
    # fp32 on CPU, as evaluation loads a model there (mathrecipe.modeling.load_for_generation)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def generation_child(setting: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time one setting in this process: tokens generated per second, after a warm-up batch."""
    import torch

    from mathrecipe.evaluate.generation import HFGenerator, SamplingSettings
    from mathrecipe.prompts import batch_prompt_ids as prompt_ids

    torch.set_num_threads(os.cpu_count() or 1)
    rows = [json.loads(x) for x in (SHARED / "benchmarks" / "gsm8k_test.jsonl").read_text().splitlines()]
    with tempfile.TemporaryDirectory() as d:
        model, tok = _model(args.model, Path(d))
    model.generation_config.eos_token_id = None  # equal work: every sequence runs to max_new_tokens
    prompts = prompt_ids(tok, [r["problem"] for r in rows[: args.prompts]])
    s = SamplingSettings(samples=1, temperature=0.6, top_p=0.95, max_new_tokens=args.max_new_tokens)

    def plain(batch_prompts: list[list[int]]) -> int:
        """What a user writes: left-pad each batch in the given order, model.generate, same sampling."""
        width = max(len(p) for p in batch_prompts)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in batch_prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch_prompts])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=s.max_new_tokens, do_sample=True,
                                 temperature=s.temperature, top_p=s.top_p, top_k=0, pad_token_id=tok.pad_token_id,
                                 eos_token_id=None)
        return int(out[:, width:].numel())

    def run(work: list[list[int]]) -> int:
        if setting == "plain_generate":
            return sum(plain(work[i: i + args.batch]) for i in range(0, len(work), args.batch))
        gen = HFGenerator(model, tok, batch_size=args.batch)
        return sum(c.n_tokens for cs in gen.generate(work, s) for c in cs)

    torch.manual_seed(0)
    run(prompts[: args.batch])  # warm-up
    before = loadavg()
    t = time.perf_counter()
    n = run(prompts)
    elapsed = time.perf_counter() - t
    return {"tokens": n, "seconds": elapsed, "tokens_per_s": n / elapsed, "load_before": before,
            "load_after": loadavg(), "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def bench_generation(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in GEN_SETTINGS}
    for r in range(args.repeats):
        for setting in (GEN_SETTINGS if r % 2 == 0 else tuple(reversed(GEN_SETTINGS))):
            proc = subprocess.run([sys.executable, __file__, "--model", args.model, "--prompts", str(args.prompts),
                                   "--max-new-tokens", str(args.max_new_tokens), "--batch", str(args.batch),
                                   "--child", setting], capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                raise SystemExit(f"generation/{setting} failed:\n{proc.stderr[-3000:]}")
            runs[setting].append(json.loads(line[len("RESULT "):]))
            print("generation", setting, runs[setting][-1], flush=True)
    table = {s: {"tokens_per_s": spread([x["tokens_per_s"] for x in rs]),
                 "peak_rss_gib": spread([x["peak_rss_gib"] for x in rs]), "tokens": rs[0]["tokens"]}
             for s, rs in runs.items()}
    return {"model": args.model, "prompts": args.prompts, "max_new_tokens": args.max_new_tokens, "batch": args.batch,
            "table": table, "runs": runs,
            "ratio_mathrecipe_over_plain": table["mathrecipe"]["tokens_per_s"]["median"]
            / table["plain_generate"]["tokens_per_s"]["median"]}


# ---------------------------------------------------------------------------------------------- grading


def _pairs() -> list[tuple[str, str]]:
    """(gold, prediction) from MATH-500: each right answer in braces (same value, never the same text, so no
    identical-text shortcut) and a wrong one (+1). 1,000 pairs, of which some repeat (repeated gold answers)."""
    from mathrecipe.grading import extract_answer

    rows = [json.loads(x) for x in (SHARED / "benchmarks" / "math500_test.jsonl").read_text().splitlines()]
    pairs = []
    for r in rows:
        pred = extract_answer(r["solution"]) or r["answer"]
        gold = r["answer"].strip()
        pairs.append((gold, "{" + pred + "}"))
        pairs.append((gold, "{" + pred + "}+1"))
    return pairs


def bench_grading(repeats: int) -> dict[str, Any]:
    import logging

    from mathrecipe.grading import Grader
    from mathrecipe.grading.verify import verify_in_process

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    listed = _pairs()
    distinct = list(dict.fromkeys(listed))  # equal work: every pair verified once by both

    def raw(pairs: list[tuple[str, str]]) -> tuple[float, list[bool]]:
        t = time.perf_counter()
        res = [verify_in_process(g, p, 3) for g, p in pairs]
        return time.perf_counter() - t, res

    def ours(pairs: list[tuple[str, str]], workers: int | None) -> tuple[float, list[bool], int]:
        t = time.perf_counter()
        with Grader(workers=workers) as grader:  # fresh: empty cache; pool start-up included
            res = grader.verify_many([g for g, _ in pairs], [p for _, p in pairs])
            n = grader.max_workers
        return time.perf_counter() - t, res, n

    times: dict[str, list[float]] = {k: [] for k in ("raw_distinct", "ours_distinct", "ours_1worker_distinct",
                                                     "raw_listed", "ours_listed")}
    loads = []
    agreement = workers = None
    for _ in range(repeats):
        before = loadavg()
        t_raw, r_raw = raw(distinct)
        t_ours, r_ours, workers = ours(distinct, None)
        t_one, _, _ = ours(distinct, 1)
        t_raw_l, _ = raw(listed)
        t_ours_l, _, _ = ours(listed, None)
        for k, v in zip(times, (t_raw, t_ours, t_one, t_raw_l, t_ours_l)):
            times[k].append(v)
        agreement = sum(a == b for a, b in zip(r_raw, r_ours)) / len(distinct)
        loads.append({"before": before, "after": loadavg()})
    rate = {k: spread([n / t for t in v]) for k, v, n in
            ((k, v, len(distinct) if k.endswith("distinct") else len(listed)) for k, v in times.items())}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"listed_pairs": len(listed), "distinct_pairs": len(distinct), "workers": workers,
            "pairs_per_s": rate, "agreement_distinct": agreement, "load": loads,
            "ratio_equal_work": med["raw_distinct"] / med["ours_distinct"],
            "ratio_equal_work_one_core_each": med["raw_distinct"] / med["ours_1worker_distinct"],
            "ratio_listed_not_equal_work": med["raw_listed"] / med["ours_listed"]}


# ----------------------------------------------------------------------------------------- token offsets


def bench_box_offsets(repeats: int, min_tokens: int = 32_000) -> dict[str, Any]:
    from mathrecipe.evaluate.samples import answer_token_offsets
    from mathrecipe.grading import boxed_spans
    from mathrecipe.toy import build_tokenizer

    rows = [json.loads(x) for x in (SHARED / "benchmarks" / "math500_test.jsonl").read_text().splitlines()]
    tok = build_tokenizer([r["solution"] for r in rows], vocab_size=2000)  # byte-level BPE, as the real models
    text, i = "<think>\n", 0
    while len(tok.encode(text, add_special_tokens=False)) < min_tokens:
        text += rows[i % len(rows)]["solution"] + "\n"
        i += 1
    ids = tok.encode(text, add_special_tokens=False)
    ends = [e for c, e in boxed_spans(text) if c]

    class Bisection:  # no fast backend: the previous method, a full decode per bisection step
        decode = staticmethod(tok.decode)

    stream_s, bisect_s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        streamed = answer_token_offsets(ids, ends, tok)
        stream_s.append(time.perf_counter() - t)
        few = ends[-3:]  # bisection on the last 3 boxes (its cost grows with the box's offset)
        t = time.perf_counter()
        bisected = answer_token_offsets(ids, few, Bisection())
        bisect_s.append(time.perf_counter() - t)
        assert bisected == streamed[-3:]
    return {"tokens": len(ids), "boxes": len(ends), "stream_s_all_boxes": spread(stream_s),
            "bisection_s_3_boxes": spread(bisect_s),
            "ratio": statistics.median(bisect_s) / statistics.median(stream_s)}


# -------------------------------------------------------------------------------------------------- main


def render(res: dict[str, Any]) -> str:
    g, r, b = res["generation"], res["grading"], res["box_offsets"]
    gt = g["table"]
    model = "SmolLM2-135M-Instruct (real)" if g["model"] == "real" else "the 1.1M toy"
    rate = r["pairs_per_s"]
    return f"""# Evaluation benchmarks ({res['date']}, {res['machine']['cpus']} CPUs, no GPU)

Command: `{res['command']}`. Load average (1/5/15 min) {res['load_start']} at start, {res['load_end']} at the end
(each measurement's own in `eval.json`). Medians over {res['repeats']} repeats, (min-max) beside them.

## Generation: tokens/s, {model}, {g['prompts']} GSM8K prompts x {g['max_new_tokens']} new tokens, batch {g['batch']}

Same prompts, batch size, sampling (temperature 0.6, top_p 0.95), fp32, EOS off in both (equal tokens:
{gt['mathrecipe']['tokens']}). Each run is a fresh process.

| setting | tokens/s | peak RSS GiB |
|---|---:|---:|
| plain batched `model.generate` (prompts in file order, growing KV cache) | {_fmt(gt['plain_generate']['tokens_per_s'], 1)} | {_fmt(gt['plain_generate']['peak_rss_gib'], 2)} |
| mathrecipe HFGenerator (length-sorted batches, static KV cache on CPU when it fits) | {_fmt(gt['mathrecipe']['tokens_per_s'], 1)} | {_fmt(gt['mathrecipe']['peak_rss_gib'], 2)} |

mathrecipe / plain: **{g['ratio_mathrecipe_over_plain']:.2f}x** (medians).

## Grading: answers verified per second

| work | raw in-process math-verify | hang-proof grader ({r['workers']} workers, default) | ratio |
|---|---:|---:|---:|
| equal work: {r['distinct_pairs']} distinct MATH-500 pairs, each verified once by both | {_fmt(rate['raw_distinct'])} | {_fmt(rate['ours_distinct'])} | **{r['ratio_equal_work']:.2f}x** |
| equal work, one core each (grader with 1 worker) | {_fmt(rate['raw_distinct'])} | {_fmt(rate['ours_1worker_distinct'])} | {r['ratio_equal_work_one_core_each']:.2f}x |
| NOT equal work: the {r['listed_pairs']}-pair list (raw verifies {r['listed_pairs']}; the grader's cache verifies {r['distinct_pairs']}) | {_fmt(rate['raw_listed'])} | {_fmt(rate['ours_listed'])} | {r['ratio_listed_not_equal_work']:.2f}x |

The grader's time includes starting its worker pool; a fresh grader (empty cache) each repeat. No pair is
text-identical to its gold, so none takes the identical-text shortcut. Agreement with raw math-verify on the
distinct pairs: {100 * r['agreement_distinct']:.1f} %.

## Token offsets of boxed answers: one {b['tokens']}-token completion

| method | seconds |
|---|---:|
| bisection with full decodes, 3 boxes | {_fmt(b['bisection_s_3_boxes'], 2)} |
| one streaming decode, all {b['boxes']} boxes | {_fmt(b['stream_s_all_boxes'], 3)} |

Ratio (medians): **{b['ratio']:.0f}x**.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("real", "toy"), default="real")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--skip", default="", help="comma list of parts to leave out: generation, grading, offsets")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(generation_child(args.child, args)), flush=True)
        return 0
    skip = set(filter(None, args.skip.split(",")))
    res: dict[str, Any] = {
        "command": " ".join(["python bench/bench_eval.py", *sys.argv[1:]]), "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"), "load_start": loadavg(),
    }
    res["generation"] = None if "generation" in skip else bench_generation(args)
    res["grading"] = None if "grading" in skip else bench_grading(args.repeats)
    res["box_offsets"] = None if "offsets" in skip else bench_box_offsets(args.repeats)
    res["load_end"] = loadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(res, indent=2) + "\n")
    if not skip:
        (out / "eval.md").write_text(render(res))
        print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
