"""GRPO rewards by name: small pure functions, wrapped as TRL reward functions, in one registry (``REWARDS``).

The recipe lists the rewards by name, each with its weight and options (``rewards.<name>.<option>``)::

    rewards:
      format: {weight: 1}
      cosine: {weight: 1, max_len: 160, unit: tokens}
      length: {weight: 1, unit: tokens}

total = sum over the listed rewards of weight x reward (TRL's ``reward_weights``, in the listed order), plus the
zero-weight ``accuracy`` monitor when it is not listed. Which rewards a run uses comes from its length-control
method (:mod:`mathrecipe.methods`).

Adding a reward: its pure function, a TRL wrapper, an options dataclass (``weight`` first; its fields are the recipe
keys) and one ``@register`` builder, all in this file; the recipe schema, the GRPO stage and the report find it by
name.

TRL calls each reward as ``f(prompts=..., completions=..., completion_ids=..., trainer_state=..., **dataset_columns)``
and expects one float per completion. Completions arrive as strings or as conversational message lists; both are
accepted. Correctness always comes from :mod:`mathrecipe.grading` (hang-proof, cached, so the rewards of one step
grade each answer once).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


def truncated_correctness(length: float, limit: float, correct: bool) -> float:
    """DLER's truncation penalty (Liu et al., arXiv 2510.15110): 1.0 for a correct answer of length L <= limit,
    else 0.0 -- a correct answer past the limit earns what a wrong one does (nothing)."""
    return 1.0 if correct and length <= limit else 0.0


def scheduled_limit(limit: int, stages: Sequence[float], step: int, max_steps: int) -> int:
    """A length budget that tightens in stages over training (ThinkPrune, Hou et al., arXiv 2504.01296: 4k -> 3k ->
    2k tokens in rounds): training is cut into ``len(stages)`` equal parts and part k (0-based) uses
    round(limit x stages[k]), k = min(K - 1, floor(step x K / max_steps)), never below 1. ``step`` counts the
    optimizer steps done before the rollout (TRL's ``trainer_state.global_step``). One stage: always ``limit``."""
    if not stages:
        raise ValueError("stages must hold at least one fraction")
    k = min(len(stages) - 1, (step * len(stages)) // max_steps) if max_steps > 0 else 0
    return max(1, round(limit * stages[max(0, k)]))


def length_percentile(lengths: Sequence[float], percentile: float) -> int:
    """Nearest-rank percentile: the smallest observed length L with at least ``percentile`` % of the lengths <= L
    (sorted lengths, index ceil(p/100 x n) - 1). 50 is the median length; 100 the longest."""
    if not lengths:
        raise ValueError("no lengths to take a percentile of")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    s = sorted(lengths)
    return int(s[max(0, math.ceil(percentile / 100 * len(s)) - 1)])


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


class Accuracy:
    """TRL reward: 1.0 for a correct final answer, else 0.0. Listed with weight 0 (the default) it changes nothing in
    training: TRL logs its mean per step (``rewards/accuracy/mean``), which the health checks compare with the format
    reward. It also keeps each step's completion lengths for the 95th percentile (TRL logs mean/min/max only)."""

    __name__ = "accuracy"

    def __init__(self, grader: Grader | None = None) -> None:
        self.grader = grader
        self.lengths: list[int] = []

    def __call__(self, completions: Any, answer: Any = None, completion_ids: Any = None, **kw: Any) -> list[float]:
        correct = _correctness(self.grader, completions, answer)
        if completion_ids is not None:
            self.lengths.extend(len(ids) for ids in completion_ids)
        return [1.0 if ok else 0.0 for ok in correct]


class TruncationReward:
    """TRL reward: :func:`truncated_correctness` of each completion, with the limit of this step
    (:func:`scheduled_limit`: ``stages=(1.0,)`` keeps it fixed, as DLER does; falling stages are ThinkPrune's
    budget schedule). ``limit`` is in ``unit``; the step comes from TRL's ``trainer_state``."""

    __name__ = "truncation"

    def __init__(self, limit: int, unit: Unit = "tokens", stages: Sequence[float] = (1.0,),
                 grader: Grader | None = None) -> None:
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"TruncationReward: limit must be a positive integer ({unit}), got {limit!r}")
        if unit not in ("tokens", "chars"):
            raise ValueError(f"TruncationReward: unit must be 'tokens' or 'chars', got {unit!r}")
        if not stages or any(not 0 < f <= 1 for f in stages):
            raise ValueError(f"TruncationReward: stages must be fractions in (0, 1], got {list(stages)!r}")
        self.limit, self.unit, self.stages, self.grader = limit, unit, tuple(stages), grader

    def limit_at(self, trainer_state: Any = None) -> int:
        """The limit of the step TRL is scoring (the first stage without a trainer state)."""
        step = getattr(trainer_state, "global_step", 0) or 0
        max_steps = getattr(trainer_state, "max_steps", 0) or 0
        return scheduled_limit(self.limit, self.stages, step, max_steps)

    def __call__(
        self,
        completions: Sequence[Any],
        answer: Sequence[Any] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
        trainer_state: Any = None,
        **kwargs: Any,
    ) -> list[float]:
        limit = self.limit_at(trainer_state)
        lengths = _lengths(completions, completion_ids, self.unit)
        correct = _correctness(self.grader, completions, answer)
        return [truncated_correctness(L, limit, ok) for L, ok in zip(lengths, correct)]


# ------------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class RewardContext:
    """What a reward's builder may need beyond its options: TRL's group size, and the lengths measured before
    training (``measured[name]``: a limit resolved from the start model's own lengths, see ``TruncationOptions``)."""

    num_generations: int = 8
    measured: dict[str, int] = field(default_factory=dict)
    grader: Grader | None = None


@dataclass(frozen=True)
class RewardSpec:
    """One registered reward: its options (the recipe keys ``rewards.<name>.*``), its builder, one line of doc."""

    name: str
    options: type
    build: Callable[[Any, RewardContext], Callable[..., list[float]]]
    doc: str


REWARDS: dict[str, RewardSpec] = {}


def register(name: str, options: type, doc: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add a reward to ``REWARDS`` under ``name`` (its TRL metric is ``rewards/<name>/mean``)."""

    def deco(build: Callable[..., Any]) -> Callable[..., Any]:
        REWARDS[name] = RewardSpec(name, options, build, doc)
        return build

    return deco


def _positive_len(key: str, option: str, value: int, unit: str, max_completion_length: int) -> list[str]:
    """A length option ``key.option`` must be >= 1 and, in tokens, reachable within grpo.max_completion_length."""
    if value < 1:
        return [f"{key}.{option} must be >= 1, got {value}"]
    if unit == "tokens" and value > max_completion_length:
        return [f"{key}.{option}={value} tokens exceeds grpo.max_completion_length={max_completion_length}: no "
                f"completion can reach it. Set {key}.{option} <= {max_completion_length} (or {key}.unit=chars)"]
    return []


W = "the reward's weight in the GRPO sum (TRL's reward_weights); 0: logged only, never trained on"
UNIT = "what a length counts: tokens (of the completion) or chars (the paper's count)"


@dataclass
class FormatOptions:
    """``rewards.format``: 1 when an answer stands before the first ``</think>``, else 0."""

    weight: float = field(default=1.0, metadata={"help": W + ". Paper: 1"})


@dataclass
class CosineOptions:
    """``rewards.cosine``: correctness scaled by length on a cosine, p = min(1, L / max_len) (the paper's Eq.)."""

    weight: float = field(default=1.0, metadata={"help": W + ". Paper: 1"})
    max_len: int = field(default=160, metadata={"help": (
        "the length (in unit) at which the cosine reaches its end values; longer completions are clamped there. "
        "Paper: 30000 chars (48000 for Qwen3-14B)")})
    unit: Unit = field(default="tokens", metadata={"help": UNIT})
    min_value_correct: float = field(default=0.1, metadata={"help": "reward of a correct answer at L >= max_len"})
    max_value_correct: float = field(default=1.0, metadata={"help": "reward of a correct answer at L = 0"})
    min_value_wrong: float = field(default=-0.1, metadata={"help": "reward of a wrong answer at L >= max_len"})
    max_value_wrong: float = field(default=-1.0, metadata={"help": "reward of a wrong answer at L = 0"})

    def problems(self, key: str, max_completion_length: int) -> list[str]:
        out = _positive_len(key, "max_len", self.max_len, self.unit, max_completion_length)
        return [m.replace("can reach it.", "can reach it, so the cosine reward's end value is never used.")
                for m in out]


@dataclass
class LengthOptions:
    """``rewards.length``: Kimi k1.5's length reward within each prompt's group: lambda = 0.5 - (L - min) / (max -
    min); correct answers get lambda, wrong ones min(0, lambda)."""

    weight: float = field(default=1.0, metadata={"help": W + ". Paper: 1"})
    unit: Unit = field(default="tokens", metadata={"help": UNIT})


@dataclass
class AccuracyOptions:
    """``rewards.accuracy``: 1 for a correct final answer, else 0."""

    weight: float = field(default=0.0, metadata={"help": (
        W + ". Default 0: logged for the health alarms and the report, never trained on")})


@dataclass
class TruncationOptions:
    """``rewards.truncation``: 1 for a correct answer within a length limit, else 0 (DLER's truncation penalty;
    with ``stages``, ThinkPrune's shrinking budget)."""

    weight: float = field(default=1.0, metadata={"help": W})
    limit: int | None = field(default=None, metadata={"help": (
        "the length limit in unit; null: the percentile-th percentile of the start model's own completion lengths "
        "on the dev problems (data.dev_path; toy: data.toy.n_dev), measured before GRPO and recorded in the report")})
    percentile: float = field(default=50.0, metadata={"help": "which percentile sets a null limit, in (0, 100]"})
    unit: Unit = field(default="tokens", metadata={"help": UNIT})
    stages: list[float] = field(default_factory=lambda: [1.0], metadata={"help": (
        "fractions of the limit, one per equal part of training (ThinkPrune: e.g. [1.0, 0.75, 0.5]); [1.0]: one "
        "fixed limit")})

    def problems(self, key: str, max_completion_length: int) -> list[str]:
        out = [] if self.limit is None else _positive_len(key, "limit", self.limit, self.unit, max_completion_length)
        if not 0 < self.percentile <= 100:
            out.append(f"{key}.percentile must be in (0, 100], got {self.percentile}")
        if not self.stages or any(not 0 < f <= 1 for f in self.stages):
            out.append(f"{key}.stages must be fractions of the limit in (0, 1], e.g. [1.0, 0.75, 0.5]; got "
                       f"{self.stages}")
        return out


@register("format", FormatOptions, "1 when an answer stands before the first </think> (the paper's format reward)")
def _format(o: FormatOptions, ctx: RewardContext) -> Callable[..., list[float]]:
    return format_reward


@register("cosine", CosineOptions, "cosine length-scaled correctness (the paper; clamped at max_len)")
def _cosine(o: CosineOptions, ctx: RewardContext) -> Callable[..., list[float]]:
    return CosineReward(max_len=o.max_len, unit=o.unit, min_value_correct=o.min_value_correct,
                        max_value_correct=o.max_value_correct, min_value_wrong=o.min_value_wrong,
                        max_value_wrong=o.max_value_wrong, grader=ctx.grader)


@register("length", LengthOptions, "Kimi k1.5 length reward within each prompt's group (the paper)")
def _length(o: LengthOptions, ctx: RewardContext) -> Callable[..., list[float]]:
    return LengthPenalty(group_size=ctx.num_generations, unit=o.unit, grader=ctx.grader)


@register("accuracy", AccuracyOptions, "1 for a correct final answer (weight 0: the health monitor's accuracy)")
def _accuracy(o: AccuracyOptions, ctx: RewardContext) -> Callable[..., list[float]]:
    return Accuracy(grader=ctx.grader)


@register("truncation", TruncationOptions,
          "1 for a correct answer within a length limit, else 0 (DLER; with stages, ThinkPrune's schedule)")
def _truncation(o: TruncationOptions, ctx: RewardContext) -> Callable[..., list[float]]:
    limit = o.limit if o.limit is not None else ctx.measured.get("truncation")
    if limit is None:
        raise ValueError("rewards.truncation.limit is null: it must be measured from the start model's lengths "
                         "before training (mathrecipe.grpo.measure_limits) or given")
    return TruncationReward(limit=limit, unit=o.unit, stages=o.stages, grader=ctx.grader)


def build_reward(name: str, options: Any, ctx: RewardContext) -> Callable[..., list[float]]:
    """The TRL reward function of the registered reward ``name`` with its recipe options."""
    return REWARDS[name].build(options, ctx)
