"""``mathrecipe run``: data -> SFT -> GRPO -> evaluation -> report, each arrow a file on disk.

output_dir/
  recipe.yaml            the resolved recipe (after overrides)
  data/                  sft.jsonl, grpo.jsonl, test.jsonl (the held-out problems)
  model-init/            the starting model (toy: built here)
  sft/checkpoint-*/      one HF checkpoint per epoch, eval-epoch*.jsonl samples
  grpo/final/            the GRPO policy (HF folder)
  eval/                  samples and summaries of the final evaluation
  report.json, report.md, report.png
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from mathrecipe.data.io import load_table, require_columns, require_nonempty, write_jsonl
from mathrecipe.recipe import Recipe, dump_recipe
from mathrecipe.report import write_report

log = logging.getLogger(__name__)


def toy_splits(recipe: Recipe) -> Any:
    """The recipe's toy task (seeded, so the model's tokenizer and the data step see the same splits)."""
    from mathrecipe.toy import make_toy_data

    t = recipe.data.toy
    return make_toy_data(t.n_sft, t.n_test, t.n_rl, t.verbose_fraction, t.max_verify_blocks, seed=recipe.seed)


def prepare_data(recipe: Recipe, out: Path, tokenizer_path: str | None = None) -> dict[str, Path]:
    """The SFT, GRPO and held-out sets the stages read (files: the recipe's paths; toy: generated, then built by
    the same code as ``mathrecipe data build``: normalise, shortest correct trace, dedup, decontaminate, report)."""
    d = recipe.data
    if d.source == "files":
        return {k: Path(v) for k, v in (("sft", d.sft_path), ("grpo", d.grpo_path), ("test", d.eval_path)) if v}
    import datasets
    from transformers import AutoTokenizer

    from mathrecipe.data.build import BuildReport, build_sets, register, write_outputs
    from mathrecipe.data.sources import normalise_openr1, normalise_problems

    if tokenizer_path is None:
        raise ValueError("the toy data step counts trace tokens: pass the toy model's folder as tokenizer_path")
    splits = toy_splits(recipe)
    test = [{"id": f"toy-{i}", **r} for i, r in enumerate(splits.test)]
    # the toy teacher traces in OpenR1-Math's schema: one generation each, verified correct
    raw = datasets.Dataset.from_list([{"problem": r["problem"], "answer": r["answer"], "generations": [r["response"]],
                                       "correctness_math_verify": [True]} for r in splits.sft])
    report = BuildReport()
    sft_src = register(report, "toy", normalise_openr1(raw, "toy"))
    rl = normalise_problems(datasets.Dataset.from_list(splits.rl), "toy-rl")
    sft, grpo = build_sets([("toy", sft_src)], ("toy-rl", rl), {"toy-test": test},
                           AutoTokenizer.from_pretrained(tokenizer_path), d.build, d.system_prompt, report)
    write_outputs(out, sft, grpo, report, {"benchmarks": ["toy-test"], "ngram": d.build.ngram})
    return {"sft": out / "sft", "grpo": out / "grpo", "test": write_jsonl(test, out / "test.jsonl")}


def prepare_model(recipe: Recipe, out: Path) -> str:
    """The starting model: an HF folder or hub id, or (``toy``) a tiny Llama built from the toy task."""
    m = recipe.model
    if m.name_or_path != "toy":
        return m.name_or_path
    from mathrecipe.toy import build_toy_model_folder

    build_toy_model_folder(out, toy_splits(recipe), vocab_size=m.toy.vocab_size, seed=recipe.seed,
                           system_prompt=recipe.data.system_prompt, hidden_size=m.toy.hidden_size,
                           num_layers=m.toy.num_layers, num_heads=m.toy.num_heads,
                           intermediate_size=m.toy.intermediate_size)
    return str(out)


def load_problems(path: str | Path, problem_column: str = "problem", answer_column: str = "answer") -> list[dict]:
    """Held-out problems as dicts with id, problem, answer; missing or empty fields are errors naming the row."""
    ds = load_table(path)
    source = f"evaluation data {path}"
    require_columns(ds, [problem_column, answer_column], source)
    require_nonempty(ds, [problem_column, answer_column], source)
    ids = ds["id"] if "id" in ds.column_names else list(range(len(ds)))
    return [{"id": i, "problem": p, "answer": str(a)}
            for i, p, a in zip(ids, ds[problem_column], ds[answer_column])]


def evaluate_checkpoint(recipe: Recipe, model_path: str, problems: list[dict], out: Path, name: str) -> dict:
    """Evaluate one saved model on the held-out problems; write its samples and summary under ``out``."""
    import torch

    from mathrecipe.evaluate.harness import evaluate_for_recipe
    from mathrecipe.modeling import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(model_path, recipe.model)
    if torch.cuda.is_available():
        model = model.to("cuda")
    rows, summary = evaluate_for_recipe(recipe, model, tok, problems, desc=f"eval {name}")
    write_jsonl(rows, out / f"{name}.samples.jsonl")
    (out / f"{name}.summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run(recipe: Recipe, stages: tuple[str, ...] = ("sft", "grpo")) -> dict[str, Any]:
    """Run the recipe's enabled stages in order and write the report. Returns the report dict."""
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_recipe(recipe, out / "recipe.yaml")
    t0 = time.time()
    from accelerate import PartialState

    with PartialState().main_process_first():  # under a multi-process launch, rank 0 writes the files first
        model_path = prepare_model(recipe, out / "model-init")
        paths = prepare_data(recipe, out / "data", model_path)
    problems = load_problems(paths["test"], recipe.data.problem_column, recipe.data.answer_column)
    e = recipe.eval
    report: dict[str, Any] = {
        "eval": {"n_problems": len(problems), "samples_per_problem": e.samples, "temperature": e.temperature,
                 "max_new_tokens": e.max_new_tokens},
    }
    timings: dict[str, float] = {"data_and_model": time.time() - t0}
    start = model_path
    start_summary: dict[str, Any] | None = None
    if "sft" in stages and recipe.sft.enabled:
        from mathrecipe.sft import run_sft

        t = time.time()
        report["sft"] = run_sft(recipe, model_path, paths["sft"], problems, out / "sft")
        timings["sft"] = time.time() - t
        start = report["sft"]["selected_checkpoint"]
        chosen = next(x for x in report["sft"]["epochs"] if x["epoch"] == report["sft"]["selected_epoch"])
        if "accuracy" in chosen:
            start_summary = {"accuracy": chosen["accuracy"], "mean_tokens": chosen["mean_tokens"],
                             "mean_tokens_correct": chosen.get("mean_tokens_correct")}
        name = f"SFT epoch {report['sft']['selected_epoch']}"
    else:
        name = "start model"
    if "grpo" in stages and recipe.grpo.enabled:
        from mathrecipe.grpo import run_grpo

        if start_summary is None:
            t = time.time()
            start_summary = evaluate_checkpoint(recipe, start, problems, out / "eval", "start")
            timings["eval_start"] = time.time() - t
        t = time.time()
        grpo = run_grpo(recipe, start, paths["grpo"], out / "grpo")
        timings["grpo"] = time.time() - t
        t = time.time()
        summary = evaluate_checkpoint(recipe, grpo["checkpoint"], problems, out / "eval", "grpo")
        timings["eval_grpo"] = time.time() - t
        grpo.update(accuracy=summary["accuracy"], mean_tokens=summary["mean_tokens"],
                    mean_tokens_correct=summary["mean_tokens_correct"],
                    truncation_rate=summary["truncation_rate"])
        report["grpo"] = grpo
    if start_summary is not None:
        report["start"] = {"name": name, "checkpoint": start, **start_summary}
    timings["total"] = time.time() - t0
    report["timings_s"] = timings
    write_report(report, out)
    return report
