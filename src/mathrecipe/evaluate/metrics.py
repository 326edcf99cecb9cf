"""Evaluation metrics as small pure functions (formulas in the docstrings, tests at the end points)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n - c, k) / C(n, k), for n samples of which c are correct."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # The product form avoids huge binomials: C(n-c, k)/C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean with a normal-approximation 95 % interval, mean +- 1.96 * sd / sqrt(m).

    Computed over per-problem scores (each problem's mean over its samples), so samples of one problem are not
    treated as independent. One value gives a zero-width interval.
    """
    if not values:
        raise ValueError("mean_ci95 of no values")
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, m, m
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values))
    return m, max(0.0, m - half), min(1.0, m + half)


def majority_vote(
    answers: Sequence[str | None],
    correct: Sequence[bool],
    same: Callable[[str, str], bool] | None = None,
) -> bool:
    """Whether the majority answer is correct (maj@k over the given samples).

    Answers are pooled into clusters of equivalent answers (``same``, by default string equality; evaluation passes
    the grader); missing answers never win. Ties go to the cluster seen first. The cluster's correctness is that of
    its first member.
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    eq = same or (lambda a, b: a == b)
    reps: list[tuple[str, bool]] = []
    counts: list[int] = []
    for a, ok in zip(answers, correct):
        if a is None:
            continue
        for j, (r, _) in enumerate(reps):
            if a == r or eq(r, a):
                counts[j] += 1
                break
        else:
            reps.append((a, ok))
            counts.append(1)
    if not reps:
        return False
    best = max(range(len(reps)), key=lambda j: (counts[j], -j))
    return reps[best][1]


def box_list(row: dict[str, Any]) -> list[tuple[int, bool]]:
    """A row's (tokens, correct) for every complete box, in order. Rows written before ``boxes`` existed carry only
    ``answer_tokens`` (where the final answer closes), read as one box with the row's correctness."""
    if "boxes" in row:
        return [(int(t), bool(ok)) for t, ok in row["boxes"]]
    t = row.get("answer_tokens")
    return [] if t is None else [(int(t), bool(row["correct"]))]


def correct_at_budget(boxes: Sequence[tuple[int, bool]], budget: int) -> bool:
    """Whether a completion cut at ``budget`` tokens is correct: its answer is then the LAST box complete within the
    budget (tokens <= budget), graded; no complete box is wrong."""
    ok = False
    for tokens, correct in boxes:
        if tokens > budget:
            break
        ok = correct
    return ok


def budget_grid(longest: int, points: int = 40) -> list[int]:
    """``points`` budgets evenly spaced up to ``longest`` tokens (round(longest x k / points), k = 1..points, at
    least 1): where an accuracy-vs-budget curve is drawn when no budgets are asked for."""
    return sorted({max(1, round(longest * k / points)) for k in range(1, points + 1)})


def accuracy_at_budgets(
    samples: Sequence[dict[str, Any]], budgets: Sequence[int], problem_key: str = "id"
) -> dict[int, float]:
    """Accuracy when generation is capped at B tokens, for each budget B.

    A sample is correct at B when the last box complete within its first B tokens is correct
    (:func:`correct_at_budget`), so an answer boxed before ``</think>`` counts from there on. Not always monotone
    in B (a later box can be wrong); equal to plain accuracy once B >= every sample's length. Averaged per problem
    first, like accuracy.
    """
    boxes = [box_list(s) for s in samples]
    out: dict[int, float] = {}
    for b in sorted(set(int(x) for x in budgets)):
        per: dict[Any, list[float]] = {}
        for s, bx in zip(samples, boxes):
            per.setdefault(s[problem_key], []).append(1.0 if correct_at_budget(bx, b) else 0.0)
        out[b] = statistics.fmean(statistics.fmean(v) for v in per.values()) if per else 0.0
    return out


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean difference, low, high): mean of b_i - a_i over paired problems, with a percentile bootstrap 95 %
    interval (problems resampled with replacement ``resamples`` times, seeded)."""
    import numpy as np

    if len(a) != len(b) or not a:
        raise ValueError(f"paired_bootstrap: need equal, non-empty lists, got {len(a)} and {len(b)}")
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.concatenate([d[rng.integers(0, len(d), size=(min(1000, resamples - i), len(d)))].mean(axis=1)
                            for i in range(0, resamples, 1000)])  # blocks of 1000: bounded memory
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def summarize(
    samples: Sequence[dict[str, Any]],
    ks: Sequence[int] = (),
    budgets: Sequence[int] = (),
    same: Callable[[str, str], bool] | None = None,
) -> dict[str, Any]:
    """Per-benchmark summary of graded samples (rows with id, sample, correct, extracted, tokens, finished).

    accuracy = mean over problems of (correct samples / samples): mean pass@1 over n samples, with its 95 % CI;
    pass@k (unbiased) and maj@k (first k samples) for each k <= n; token statistics; truncation rate; budgets.
    """
    if not samples:
        raise ValueError("summarize: no samples")
    by_problem: dict[Any, list[dict[str, Any]]] = {}
    for s in samples:
        by_problem.setdefault(s["id"], []).append(s)
    for rows in by_problem.values():
        rows.sort(key=lambda r: r.get("sample", 0))
    n = min(len(r) for r in by_problem.values())
    per_problem = [statistics.fmean(1.0 if r["correct"] else 0.0 for r in rows) for rows in by_problem.values()]
    acc, lo, hi = mean_ci95(per_problem)
    tokens = [s["tokens"] for s in samples]
    tokens_ok = [s["tokens"] for s in samples if s["correct"]]
    out: dict[str, Any] = {
        "n_problems": len(by_problem),
        "samples": n,
        "accuracy": acc,
        "ci95": [lo, hi],
        "mean_tokens": statistics.fmean(tokens),
        "median_tokens": statistics.median(tokens),
        "mean_tokens_correct": statistics.fmean(tokens_ok) if tokens_ok else None,
        "median_tokens_correct": statistics.median(tokens_ok) if tokens_ok else None,
        "truncation_rate": statistics.fmean(0.0 if s.get("finished", True) else 1.0 for s in samples),
    }
    valid_ks = sorted(set(k for k in ks if 1 <= k <= n))
    if valid_ks:
        out["pass@k"] = {
            str(k): statistics.fmean(
                pass_at_k(len(rows), sum(bool(r["correct"]) for r in rows), k) for rows in by_problem.values()
            )
            for k in valid_ks
        }
        out["maj@k"] = {
            str(k): statistics.fmean(
                1.0 if majority_vote([r["extracted"] for r in rows[:k]], [r["correct"] for r in rows[:k]], same)
                else 0.0
                for rows in by_problem.values()
            )
            for k in valid_ks
        }
    if budgets:
        out["budgets"] = {str(b): a for b, a in accuracy_at_budgets(samples, budgets).items()}
    return out
