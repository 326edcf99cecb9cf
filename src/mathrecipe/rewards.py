"""GRPO rewards: small pure functions, wrapped as TRL reward functions.

total = w_format * format + w_cosine * cosine + w_length * length   (weights from the recipe, default 1, 1, 1)

TRL calls each reward as ``f(prompts=..., completions=..., completion_ids=..., **dataset_columns)`` and expects one
float per completion. Completions arrive as strings or as conversational message lists; both are accepted.
Correctness always comes from :mod:`mathrecipe.grading` (hang-proof, cached, so the rewards of one step grade each
answer once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from mathrecipe.grading import Grader, default_grader, extract_answer
from mathrecipe.prompts import THINK_END

Unit = Literal["tokens", "chars"]


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the assistant contents of a conversational message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        parts = []
        for m in completion:
            if not isinstance(m, dict) or "content" not in m:
                raise TypeError(f"a conversational completion must be a list of messages with 'content', got {m!r}")
            if m.get("role", "assistant") == "assistant":
                parts.append(m["content"] if isinstance(m["content"], str) else str(m["content"]))
        return "".join(parts)
    raise TypeError(f"completion must be a string or a list of messages, got {type(completion).__name__}")


# ------------------------------------------------------------------------------------------ pure functions


def boxed_before_think(text: str) -> bool:
    """The paper's format rule, stated by its reason (inference stops at ``</think>``, so the answer must stand
    before it): the text before the FIRST ``</think>`` holds an answer the grader extracts
    (:func:`mathrecipe.grading.extract_answer`: the last complete, non-empty ``\\boxed{}``, ``\\fbox{}`` or
    ``\\boxed 5``). Unlike the authors' regex ``^.*?oxed{(.*?)}.*?</think>.*?$``, an empty box or a box after the
    first ``</think>`` earns nothing, and ``\\boxed 5`` / ``\\fbox{5}`` count (recipes/paper/README.md lists why).
    """
    end = text.find(THINK_END)
    if end < 0:
        return False
    return extract_answer(text[:end]) is not None


def cosine_scaled(
    length: float,
    max_len: float,
    correct: bool,
    min_value_correct: float = 0.1,
    max_value_correct: float = 1.0,
    min_value_wrong: float = -0.1,
    max_value_wrong: float = -1.0,
) -> float:
    """Cosine length-scaled correctness.

    p = min(1, L / max_len)   (clamped: past max_len the reward stays at its end value, unlike open-r1's)
    correct: min_c + (max_c - min_c) * (1 + cos(pi p)) / 2   -> 1.0 at L = 0, 0.1 at L >= max_len
    wrong:   min_w + (max_w - min_w) * (1 + cos(pi p)) / 2   -> -1.0 at L = 0, -0.1 at L >= max_len
    With the defaults: correct 0.1 + 0.45 (1 + cos pi p); wrong -0.1 - 0.45 (1 + cos pi p).
    Short correct answers earn most; short wrong answers cost most (a long attempt is better than a quick guess).
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    p = min(1.0, max(0.0, length / max_len))
    scale = 0.5 * (1.0 + math.cos(math.pi * p))
    if correct:
        return min_value_correct + (max_value_correct - min_value_correct) * scale
    return min_value_wrong + (max_value_wrong - min_value_wrong) * scale


def kimi_length_penalty(lengths: Sequence[float], correct: Sequence[bool]) -> list[float]:
    """Kimi k1.5 length reward over ONE group (the completions of one prompt).

    lambda_i = 0.5 - (L_i - L_min) / (L_max - L_min)
    correct -> lambda_i (in [-0.5, 0.5]); wrong -> min(0, lambda_i); all lengths equal -> 0 for all.
    """
    if len(lengths) != len(correct):
        raise ValueError(f"{len(lengths)} lengths but {len(correct)} correctness flags")
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * len(lengths)
    out = []
    for L, ok in zip(lengths, correct):
        lam = 0.5 - (L - lo) / (hi - lo)
        out.append(lam if ok else min(0.0, lam))
    return out


# ------------------------------------------------------------------------------------ TRL reward functions


def _lengths(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None, unit: Unit) -> list[int]:
    if unit == "chars":
        return [len(completion_text(c)) for c in completions]
    if unit != "tokens":
        raise ValueError(f"length unit must be 'tokens' or 'chars', got {unit!r}")
    if completion_ids is None:
        raise ValueError(
            "a token-length reward needs completion_ids (TRL's GRPOTrainer passes them); "
            "pass completion_ids=... or use unit='chars'"
        )
    if len(completion_ids) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(completion_ids)} completion_ids")
    return [len(ids) for ids in completion_ids]


def _correctness(grader: Grader | None, completions: Sequence[Any], answer: Sequence[Any] | None) -> list[bool]:
    if answer is None:
        raise ValueError("this reward needs the dataset's 'answer' column (the gold answer of each prompt)")
    if len(answer) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(answer)} answers")
    g = grader or default_grader()
    return [r.correct for r in g.grade([completion_text(c) for c in completions], [str(a) for a in answer])]


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when an answer stands before the first ``</think>`` (:func:`boxed_before_think`), else 0.0."""
    return [1.0 if boxed_before_think(completion_text(c)) else 0.0 for c in completions]


format_reward.__name__ = "format"


class CosineReward:
    """TRL reward: :func:`cosine_scaled` of each completion's length and correctness.

    ``max_len`` is in ``unit`` (tokens by default, from ``completion_ids``; ``unit="chars"`` is the paper's count).
    """

    __name__ = "cosine"

    def __init__(
        self,
        max_len: int,
        unit: Unit = "tokens",
        min_value_correct: float = 0.1,
        max_value_correct: float = 1.0,
        min_value_wrong: float = -0.1,
        max_value_wrong: float = -1.0,
        grader: Grader | None = None,
    ) -> None:
        if not isinstance(max_len, int) or max_len <= 0:
            raise ValueError(f"CosineReward: max_len must be a positive integer ({unit}), got {max_len!r}")
        if unit not in ("tokens", "chars"):
            raise ValueError(f"CosineReward: unit must be 'tokens' or 'chars', got {unit!r}")
        self.max_len, self.unit, self.grader = max_len, unit, grader
        self.values = dict(
            min_value_correct=min_value_correct,
            max_value_correct=max_value_correct,
            min_value_wrong=min_value_wrong,
            max_value_wrong=max_value_wrong,
        )

    def __call__(
        self,
        completions: Sequence[Any],
        answer: Sequence[Any] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        lengths = _lengths(completions, completion_ids, self.unit)
        correct = _correctness(self.grader, completions, answer)
        return [cosine_scaled(L, self.max_len, ok, **self.values) for L, ok in zip(lengths, correct)]


class LengthPenalty:
    """TRL reward: :func:`kimi_length_penalty`, computed within each prompt's group of ``group_size`` completions.

    TRL lays out each prompt's ``num_generations`` completions next to each other; the paper's code took min/max
    over the whole per-GPU batch instead, mixing problems of different difficulty. When TRL passes ``prompts``, each
    group is checked to hold one prompt.
    """

    __name__ = "length"

    def __init__(self, group_size: int, unit: Unit = "tokens", grader: Grader | None = None) -> None:
        if not isinstance(group_size, int) or group_size < 2:
            raise ValueError(f"LengthPenalty: group_size (num_generations) must be an integer >= 2, got {group_size!r}")
        if unit not in ("tokens", "chars"):
            raise ValueError(f"LengthPenalty: unit must be 'tokens' or 'chars', got {unit!r}")
        self.group_size, self.unit, self.grader = group_size, unit, grader

    def __call__(
        self,
        completions: Sequence[Any],
        answer: Sequence[Any] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
        prompts: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        n, g = len(completions), self.group_size
        if n % g:
            raise ValueError(
                f"LengthPenalty: a batch of {n} completions does not split into groups of num_generations={g}; "
                "make the per-device generation batch a multiple of num_generations"
            )
        if prompts is not None:
            for s in range(0, n, g):
                if any(prompts[i] != prompts[s] for i in range(s, s + g)):
                    raise ValueError(
                        f"LengthPenalty: completions {s}..{s + g - 1} do not share one prompt; "
                        "groups must be contiguous blocks of num_generations completions"
                    )
        lengths = _lengths(completions, completion_ids, self.unit)
        correct = _correctness(self.grader, completions, answer)
        out: list[float] = []
        for s in range(0, n, g):
            out.extend(kimi_length_penalty(lengths[s : s + g], correct[s : s + g]))
        return out
