"""One evaluation harness, used by ``mathrecipe run`` (per SFT epoch, after GRPO) and by ``mathrecipe eval``.

problems -> prompts (the shared ``prompts`` module) -> n samples each -> graded (the shared ``grading``) -> rows
(one per sample, the samples.jsonl schema) -> summary (accuracy with CI, pass@k, maj@k, tokens, truncation, budgets).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from mathrecipe.evaluate.generation import Completion, SamplingSettings, answer_tokens, generate_hf
from mathrecipe.evaluate.metrics import summarize
from mathrecipe.grading import Grader, answer_end, default_grader
from mathrecipe.prompts import SYSTEM_PROMPT, render_prompt


def grade_completions(
    problems: Sequence[dict[str, Any]],
    completions: Sequence[Sequence[Completion]],
    tokenizer: Any,
    grader: Grader | None = None,
    benchmark: str | None = None,
) -> list[dict[str, Any]]:
    """Sample rows for each problem's completions: extracted answer, correctness, tokens, answer_tokens."""
    g = grader or default_grader()
    flat = [(p, j, c) for p, cs in zip(problems, completions) for j, c in enumerate(cs)]
    results = g.grade([c.text for _, _, c in flat], [str(p["answer"]) for p, _, _ in flat])
    rows = []
    for (p, j, c), r in zip(flat, results):
        row: dict[str, Any] = {}
        if benchmark is not None:
            row["benchmark"] = benchmark
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
