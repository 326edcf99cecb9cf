"""One evaluation harness, used by ``mathrecipe run`` (per SFT epoch, after GRPO) and by ``mathrecipe eval``.

problems -> prompts (the shared ``prompts`` module) -> n samples each -> graded (the shared ``grading``) -> rows
(one per sample, the samples.jsonl schema) -> summary (accuracy with CI, pass@k, maj@k, tokens, truncation, budgets).
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mathrecipe.errors import MathRecipeError
from mathrecipe.evaluate.generation import Completion, SamplingSettings, answer_tokens, generate_hf
from mathrecipe.evaluate.metrics import summarize
from mathrecipe.grading import Grader, answer_end, default_grader
from mathrecipe.prompts import SYSTEM_PROMPT, render_prompt


def grade_completions(
    problems: Sequence[dict[str, Any]],
    completions: Sequence[Sequence[Completion]],
    tokenizer: Any,
    grader: Grader | None = None,
    benchmarks: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Sample rows for each problem's completions: extracted answer, correctness, tokens, answer_tokens.

    All completions are graded in one call, so the grader's workers run in parallel. ``benchmarks`` names each
    problem's benchmark (a ``benchmark`` field is added when given).
    """
    g = grader or default_grader()
    names = benchmarks if benchmarks is not None else [None] * len(problems)
    flat = [(b, p, j, c) for b, p, cs in zip(names, problems, completions) for j, c in enumerate(cs)]
    results = g.grade([c.text for *_, c in flat], [str(p["answer"]) for _, p, _, _ in flat])
    rows = []
    for (b, p, j, c), r in zip(flat, results):
        row: dict[str, Any] = {}
        if b is not None:
            row["benchmark"] = b
        row.update(
            id=p["id"],
            sample=j,
            completion=c.text,
            tokens=c.n_tokens,
            finished=c.finished,
            extracted=r.extracted,
            answer=str(p["answer"]),
            correct=r.correct,
            answer_tokens=answer_tokens(c, answer_end(c.text), tokenizer) if r.correct else None,
        )
        rows.append(row)
    return rows


def same_answer(grader: Grader | None = None) -> Callable[[str, str], bool]:
    """Answer equivalence for majority voting, by the grader (cached, hang-proof)."""
    g = grader or default_grader()
    return lambda a, b: g.verify_many([a], [b])[0]


def evaluate_model(
    model: Any,
    tokenizer: Any,
    problems: Sequence[dict[str, Any]],
    settings: SamplingSettings,
    system_prompt: str | None = SYSTEM_PROMPT,
    batch_size: int = 64,
    ks: Sequence[int] = (),
    budgets: Sequence[int] = (),
    grader: Grader | None = None,
    desc: str = "evaluate",
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Generate ``settings.n`` samples per problem with a loaded HF model, grade them, and summarise.

    ``problems`` are dicts with ``id``, ``problem`` and ``answer``. Returns (sample rows, summary).
    """
    prompts = [render_prompt(tokenizer, p["problem"], system_prompt) for p in problems]
    with tqdm(total=len(prompts) * settings.n, desc=desc, unit="sample", disable=not progress, leave=False) as bar:
        completions = generate_hf(model, tokenizer, prompts, settings, batch_size=batch_size, on_batch=bar.update)
    rows = grade_completions(problems, completions, tokenizer, grader)
    return rows, summarize(rows, ks=ks, budgets=budgets, same=same_answer(grader))


def evaluate_for_recipe(recipe: Any, model: Any, tokenizer: Any, problems: Sequence[dict[str, Any]],
                        desc: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`evaluate_model` with a recipe's ``eval`` settings, seed and system prompt (every in-run evaluation)."""
    e = recipe.eval
    settings = SamplingSettings(n=e.samples, temperature=e.temperature, top_p=e.top_p,
                                max_new_tokens=e.max_new_tokens, seed=recipe.seed, stop_at_think=e.stop_at_think)
    return evaluate_model(model, tokenizer, problems, settings, recipe.data.system_prompt,
                          batch_size=e.batch_size, desc=desc)


# ------------------------------------------------------------------------------------ ``mathrecipe eval``

_SETTINGS_KEYS = ("model", "n", "max_new_tokens", "temperature", "top_p", "min_p", "stop_at_think", "system_prompt",
                  "seed")


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def _read_samples(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.exists():
        with path.open(encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut off by an interruption: everything after it is redone
    return rows


def run_eval(
    model: str,
    benchmarks: Sequence[str],
    out_dir: str | Path,
    settings: SamplingSettings,
    backend: str = "hf",
    budgets: Sequence[int] = (),
    ks: Sequence[int] | None = None,
    data_dir: str | Path | None = None,
    batch_size: int = 64,
    system_prompt: str | None = SYSTEM_PROMPT,
    limit: int | None = None,
    problem_column: str | None = None,
    answer_column: str | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on ``benchmarks``; resumable: problems whose n samples are already in
    ``out_dir/samples.jsonl`` are not generated again. Writes samples.jsonl, summary.json, summary.md, budget.png."""
    from mathrecipe.data.benchmarks import load_benchmark

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"model": str(model), "n": settings.n, "max_new_tokens": settings.max_new_tokens,
              "temperature": settings.temperature, "top_p": settings.top_p, "min_p": settings.min_p,
              "stop_at_think": settings.stop_at_think, "system_prompt": system_prompt, "seed": settings.seed}
    cfg_path = out / "eval_config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        diff = [k for k in _SETTINGS_KEYS if old.get(k) != config.get(k)]
        if diff:
            raise MathRecipeError(f"{out} holds samples made with other settings ({', '.join(diff)} differ); "
                             "use a new --out folder, or the same settings to resume")
    cfg_path.write_text(json.dumps(config, indent=2))

    loaded = [load_benchmark(b, data_dir, problem_column, answer_column, limit) for b in benchmarks]
    samples_path = out / "samples.jsonl"
    rows = _read_samples(samples_path)
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault((r["benchmark"], str(r["id"])), []).append(r)
    complete = {k for k, v in by_key.items() if {r["sample"] for r in v} >= set(range(settings.n))}
    kept = [r for r in rows if (r["benchmark"], str(r["id"])) in complete and r["sample"] < settings.n]
    if len(kept) != len(rows):  # drop partial problems and cut-off lines before appending
        with samples_path.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    todo = [(name, p) for name, probs in loaded for p in probs if (name, str(p["id"])) not in complete]

    if todo:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        gen = _make_backend(model, tokenizer, backend, batch_size, settings.seed)
        chunk = max(1, (batch_size * 4) // settings.n)
        with tqdm(total=len(todo) * settings.n, desc="eval", unit="sample", disable=not progress) as bar, \
                samples_path.open("a", encoding="utf-8") as f:
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                prompts = [render_prompt(tokenizer, p["problem"], system_prompt) for _, p in part]
                # a seed per chunk, from its first problem: reproducible for the same work left to do
                seed = (settings.seed + zlib.crc32(f"{part[0][0]}/{part[0][1]['id']}".encode())) % 2**31
                completions = gen(prompts, dataclasses.replace(settings, seed=seed), bar.update)
                rows = grade_completions([p for _, p in part], completions, tokenizer,
                                         benchmarks=[name for name, _ in part])
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
                f.flush()

    all_rows = _read_samples(samples_path)
    ks = list(ks) if ks else default_ks(settings.n)
    summaries: dict[str, dict[str, Any]] = {}
    same = same_answer()
    for name, _ in loaded:
        bench_rows = [r for r in all_rows if r["benchmark"] == name]
        summaries[name] = summarize(bench_rows, ks=ks, budgets=budgets, same=same)
    (out / "summary.json").write_text(json.dumps({"config": config, "benchmarks": summaries}, indent=2))
    (out / "summary.md").write_text(summary_markdown(summaries, config))
    if budgets:
        budget_plot(summaries, out / "budget.png")
    return summaries


def _make_backend(model: str, tokenizer: Any, backend: str, batch_size: int, seed: int) -> Callable[..., Any]:
    if backend == "vllm":
        from mathrecipe.evaluate.generation import VLLMBackend

        v = VLLMBackend(model, seed=seed)

        def run_vllm(prompts, s, update):
            res = v.generate(prompts, s)
            update(len(prompts) * s.n)
            return res

        return run_vllm
    if backend != "hf":
        raise MathRecipeError(f"unknown backend {backend!r}: use 'hf' or 'vllm'")
    import torch
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16 if cuda else torch.float32)
    if cuda:
        m = m.to("cuda")
    return lambda prompts, s, update: generate_hf(m, tokenizer, prompts, s, batch_size=batch_size, on_batch=update)


def summary_markdown(summaries: dict[str, dict[str, Any]], config: dict[str, Any]) -> str:
    """A table like the paper's: pass@1 (mean over n samples) with CI, maj@n, pass@n, tokens, budgets."""
    budgets = sorted({int(b) for s in summaries.values() for b in s.get("budgets", {})})
    n = config["n"]
    head = ["benchmark", "problems", f"pass@1 (n={n})", "95% CI", f"maj@{n}", f"pass@{n}", "mean tokens",
            "mean tokens (correct)", "truncated"] + [f"acc @{b}" for b in budgets]
    lines = [f"# Evaluation of `{config['model']}`", "",
             f"temperature {config['temperature']}, top_p {config['top_p']}, max tokens {config['max_new_tokens']}"
             f"{', stop at </think>' if config['stop_at_think'] else ''}. Accuracies in %.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summaries.items():
        def pct(x):
            return "–" if x is None else f"{100 * x:.1f}"

        cells = [name, str(s["n_problems"]), pct(s["accuracy"]), f"{pct(s['ci95'][0])}–{pct(s['ci95'][1])}",
                 pct(s.get("maj@k", {}).get(str(n))), pct(s.get("pass@k", {}).get(str(n))),
                 f"{s['mean_tokens']:.0f}",
                 "–" if s["mean_tokens_correct"] is None else f"{s['mean_tokens_correct']:.0f}",
                 pct(s["truncation_rate"])]
        cells += [pct(s.get("budgets", {}).get(str(b))) for b in budgets]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def budget_plot(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in summaries.items():
        pts = sorted((int(b), a) for b, a in s.get("budgets", {}).items())
        if pts:
            ax.plot([b for b, _ in pts], [a for _, a in pts], "o-", label=name)
    ax.set_xlabel("token budget")
    ax.set_ylabel("accuracy (pass@1)")
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy vs token budget")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
