"""Benchmarks for evaluation (not timed tests): run `make bench` or `python bench/bench_eval.py`.

1. Generation throughput on CPU: batched (HFGenerator, batch 64, and batch_size=auto) vs one problem at a time
   (the same generator, batch 1), same model, prompts and token count.
2. Grading throughput: mathrecipe's hang-proof grader (worker processes, hard bound per answer) vs raw in-process
   math-verify (parse + verify in a loop), on the same answer pairs from MATH-500. The pairs are written so that
   no prediction is text-identical to its gold, i.e. every pair goes through math-verify in both.
3. Token offsets of boxed answers (accuracy at a token budget): one streaming decode vs bisection with full
   decodes (the previous method), on a 32k-token completion made of MATH-500 solutions (one box each).

Writes bench/results/eval.json and bench/results/eval.md (the latest results, kept in the repo).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MATHRECIPE_SHARED_DATA", HERE.parent.parent / "shared" / "data"))


def bench_generation(n_prompts: int = 64, max_new_tokens: int = 48) -> dict:
    import torch

    from mathrecipe.evaluate.generation import HFGenerator, SamplingSettings, prompt_ids
    from mathrecipe.toy import build_toy_model_folder, make_toy_data

    splits = make_toy_data(n_sft=500, n_test=n_prompts, n_rl=10, seed=0)
    with tempfile.TemporaryDirectory() as d:
        build_toy_model_folder(d, splits)  # the toy recipe's model: 1.09M parameters
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model, tok = AutoModelForCausalLM.from_pretrained(d), AutoTokenizer.from_pretrained(d)
    # never stop early, so both modes generate exactly the same number of tokens
    model.generation_config.eos_token_id = None
    prompts = prompt_ids(tok, [p["problem"] for p in splits.test])
    s = SamplingSettings(samples=1, temperature=1.0, max_new_tokens=max_new_tokens)
    torch.set_num_threads(os.cpu_count() or 1)
    HFGenerator(model, tok, batch_size=2).generate(prompts[:2], s)  # warm-up

    def timed(batch_size: int | str) -> tuple[float, int]:
        t = time.perf_counter()
        out = HFGenerator(model, tok, batch_size=batch_size).generate(prompts, s)
        return time.perf_counter() - t, sum(c.n_tokens for cs in out for c in cs)

    t_single, tok_single = timed(1)
    t_batch, tok_batch = timed(64)
    t_auto, tok_auto = timed("auto")
    return {
        "prompts": n_prompts, "max_new_tokens": max_new_tokens,
        "one_at_a_time_tokens_per_s": tok_single / t_single,
        "batched_tokens_per_s": tok_batch / t_batch,
        "auto_batch_size": HFGenerator(model, tok, batch_size="auto").batch_size_for(prompts, s),
        "auto_tokens_per_s": tok_auto / t_auto,
        "ratio_batched_over_one_at_a_time": (tok_batch / t_batch) / (tok_single / t_single),
    }


def bench_box_offsets(min_tokens: int = 32_000) -> dict:
    from mathrecipe.evaluate.generation import answer_token_offsets
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

    t = time.perf_counter()
    streamed = answer_token_offsets(ids, ends, tok)
    t_stream = time.perf_counter() - t
    few = ends[-3:]  # bisection is timed on the last 3 boxes (its cost grows with the box's offset)
    t = time.perf_counter()
    bisected = answer_token_offsets(ids, few, Bisection())
    t_bisect = (time.perf_counter() - t) / len(few)
    assert bisected == streamed[-3:]
    return {"tokens": len(ids), "boxes": len(ends), "stream_s_all_boxes": t_stream,
            "bisection_s_per_box": t_bisect, "ratio_bisection_over_stream_per_completion_with_3_boxes":
            3 * t_bisect / t_stream}


def _pairs(limit: int | None = None) -> list[tuple[str, str]]:
    from mathrecipe.grading import extract_answer

    rows = [json.loads(x) for x in (SHARED / "benchmarks" / "math500_test.jsonl").read_text().splitlines()]
    pairs = []
    for r in rows:
        pred = extract_answer(r["solution"]) or r["answer"]
        gold = r["answer"].strip()
        pairs.append((gold, "{" + pred + "}"))  # braces: same value, never the same text
        pairs.append((gold, "{" + pred + "}+1"))  # a wrong answer
    return pairs[:limit] if limit else pairs


def bench_grading(repeats: int = 1) -> dict:
    from mathrecipe.grading import Grader, _verify_in_process

    pairs = _pairs()
    import logging

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    t = time.perf_counter()
    raw = [_verify_in_process(g, p, 3) for g, p in pairs]
    t_raw = time.perf_counter() - t
    def hang_proof(workers: int | None) -> tuple[float, list[bool], int]:
        t = time.perf_counter()
        with Grader(workers=workers) as grader:  # start-up of the worker pool included
            res = grader.verify_many([g for g, _ in pairs], [p for _, p in pairs])
            n = grader.max_workers
        return time.perf_counter() - t, res, n

    t_one, _, _ = hang_proof(1)
    t_ours, ours, workers = hang_proof(None)
    return {
        "pairs": len(pairs), "workers": workers,
        "raw_math_verify_pairs_per_s": len(pairs) / t_raw,
        "hang_proof_1_worker_pairs_per_s": len(pairs) / t_one,
        "hang_proof_pairs_per_s": len(pairs) / t_ours,
        "ratio_1_worker_over_raw": t_raw / t_one,
        "ratio_hang_proof_over_raw": t_raw / t_ours,
        "agreement": sum(a == b for a, b in zip(raw, ours)) / len(pairs),
    }


def main() -> int:
    results = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform(),
                    "load_average_1min_at_start": os.getloadavg()[0]},
        "date": time.strftime("%Y-%m-%d"),
        "generation": bench_generation(),
        "grading": bench_grading(),
        "box_offsets": bench_box_offsets(),
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    g, r, b = results["generation"], results["grading"], results["box_offsets"]
    md = f"""# Evaluation benchmarks ({results['date']}, {results['machine']['cpus']} CPUs, no GPU, load average {results['machine']['load_average_1min_at_start']:.1f} at start)

`python bench/bench_eval.py` -- raw numbers in `eval.json`. On a shared machine absolute rates follow its load (in
the title); each ratio compares two runs made back to back in the same process.

| what | baseline | mathrecipe | ratio | goal |
|---|---:|---:|---:|---:|
| generation, tokens/s ({g['prompts']} prompts x {g['max_new_tokens']} tokens, toy 1.09M model) | one at a time: {g['one_at_a_time_tokens_per_s']:.0f} | batched (64): {g['batched_tokens_per_s']:.0f} | **{g['ratio_batched_over_one_at_a_time']:.1f}x** | >= 5x |
| generation, batch_size=auto (picks {g['auto_batch_size']} under the 4 GiB CPU KV budget) | one at a time: {g['one_at_a_time_tokens_per_s']:.0f} | auto: {g['auto_tokens_per_s']:.0f} | {g['auto_tokens_per_s'] / g['one_at_a_time_tokens_per_s']:.1f}x | |
| box token offsets, one {b['tokens']}-token completion with 3 boxes (s) | bisection, full decodes: {3 * b['bisection_s_per_box']:.2f} | one streaming decode: {b['stream_s_all_boxes']:.2f} (all {b['boxes']} boxes) | **{b['ratio_bisection_over_stream_per_completion_with_3_boxes']:.0f}x** | |
| grading, answers/s ({r['pairs']} MATH-500 pairs) | raw in-process math-verify: {r['raw_math_verify_pairs_per_s']:.0f} | hang-proof, {r['workers']} workers (default): {r['hang_proof_pairs_per_s']:.0f} | **{r['ratio_hang_proof_over_raw']:.2f}x** | >= 0.8x |
| grading, same pairs, one core each | raw in-process math-verify: {r['raw_math_verify_pairs_per_s']:.0f} | hang-proof, 1 worker: {r['hang_proof_1_worker_pairs_per_s']:.0f} | {r['ratio_1_worker_over_raw']:.2f}x | |

Grading agreement with raw math-verify: {100 * r['agreement']:.1f} %. The hang-proof time includes starting the
worker pool; no pair is text-identical to its gold, so none takes the grader's identical-text shortcut. Pairs that
repeat (MATH-500 has repeated gold answers) are verified once by the grader's cache; raw math-verify verifies each.
"""
    (out / "eval.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
