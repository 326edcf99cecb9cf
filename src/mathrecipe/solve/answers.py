"""Answers as votes: the AIMO integer format (``int0-999``) and pooling by the grader's equivalence (``any``).

``int0-999`` -- AIMO's answers are integers 0-999. A boxed answer becomes one by these rules, and anything else is an
invalid vote (it is counted, never voted):

=========================  ======  =====================================================================
boxed                      vote    why
=========================  ======  =====================================================================
``42``, ``042``, ``+42``   42      an integer; leading zeros as AIME writes them ("025")
``$42$``, ``\\text{42}``     42      math-mode and text wrappers, spaces and thin spaces are dropped
``x = 42``                 42      one leading ``name =``
``42^\\circ``, ``42\\%``     42      a trailing degree or percent sign
``12.0``                   12      a decimal whose fraction is zero is that integer; ``12.5`` is invalid
``\\frac{6}{3}``, ``6/3``    2       an exact fraction of integers that divides evenly; ``\\frac{7}{2}`` is invalid
``1,000``, ``1{,}000``     0       thousands separators (groups of exactly three digits) make 1000; then:
``2024``                   24      integers >= 1000 are reduced mod 1000 -- the problems ask for a remainder
                                   mod 1000 when the answer is larger, and a model that forgets to reduce is
                                   repaired this way (the winning AIMO notebooks did the same)
``-3``                     --      invalid: a remainder is never negative, so no reduction repairs it
``1,2``, ``2^{10}``, ``\\sqrt{2}``  --  lists, powers and other expressions are not evaluated: invalid
=========================  ======  =====================================================================

``any`` -- votes are the raw extracted answers, pooled by ``Grader.verify_many`` (math-verify, hang-proof): an answer
joins the first earlier answer it is equivalent to (the earlier one acting as gold).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mathrecipe.errors import MathRecipeError

INT_FORMAT, ANY_FORMAT = "int0-999", "any"
ANSWER_FORMATS = (INT_FORMAT, ANY_FORMAT)

Vote = int | str  # int0-999: the integer; any: the first-seen text of its equivalence class

_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox|boxed|displaystyle)\s*\{([^{}]*)\}")
_SPACES = re.compile(r"\\[,;:! ]|~|\\quad|\\qquad|\s+")
_NAME_EQ = re.compile(r"^[A-Za-z][A-Za-z0-9_{}\\]*=(?!=)")
_SUFFIX = re.compile(r"(?:\^\{?\\circ\}?|°|\\%|%|\.)$")
_INT = re.compile(r"[+-]?\d+")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:(?:,|\{,\})\d{3})+")
_DECIMAL = re.compile(r"([+-]?\d+)\.(\d+)")
_FRAC = re.compile(r"([+-]?)\\[dt]?frac(?:\{([+-]?\d+)\}|(\d))(?:\{([+-]?\d+)\}|(\d))")
_SLASH = re.compile(r"([+-]?\d+)/([+-]?\d+)")


def check_answer_format(value: str) -> str:
    if value not in ANSWER_FORMATS:
        raise MathRecipeError(f"--answer-format must be one of {', '.join(ANSWER_FORMATS)}, got {value!r}")
    return value


def _exact_int(text: str) -> int | None:
    """The integer ``text`` denotes exactly (integer, thousands-separated, zero-fraction decimal, even fraction)."""
    if _INT.fullmatch(text):
        return int(text)
    if _THOUSANDS.fullmatch(text):
        return int(text.replace("{,}", "").replace(",", ""))
    m = _DECIMAL.fullmatch(text)
    if m:
        return int(m.group(1)) if not m.group(2).strip("0") else None
    m = _FRAC.fullmatch(text)
    if m:
        sign, num, den = m.group(1), int(m.group(2) or m.group(3)), int(m.group(4) or m.group(5))
        q = _divide(num, den)
        return None if q is None else (-q if sign == "-" else q)
    m = _SLASH.fullmatch(text)
    if m:
        return _divide(int(m.group(1)), int(m.group(2)))
    return None


def _divide(num: int, den: int) -> int | None:
    return num // den if den != 0 and num % den == 0 else None


def int_answer(raw: str | None) -> int | None:
    """The AIMO answer (an integer 0-999) a boxed answer stands for, or None when it is not a valid vote.

    The rules and their reasons are in this module's docstring: wrappers and one ``name =`` dropped, an exact
    integer value (thousands separators, zero-fraction decimals and even fractions allowed), negatives invalid,
    n >= 1000 reduced to n mod 1000.
    """
    if raw is None:
        return None
    text = raw.strip().strip("$")
    for _ in range(3):  # nested wrappers: \text{\textbf{42}}
        text = _WRAPPERS.sub(r"\1", text)
    text = _SPACES.sub("", text.replace("\\left", "").replace("\\right", ""))
    text = _NAME_EQ.sub("", text)
    while True:  # "42^\circ." -> "42"
        stripped = _SUFFIX.sub("", text)
        if stripped == text:
            break
        text = stripped
    n = _exact_int(text)
    if n is None or n < 0:
        return None
    return n % 1000


@dataclass
class Tally:
    """The votes of one problem, pooled into answers.

    ``int0-999``: by value after :func:`int_answer`. ``any``: by the grader's equivalence (``grader`` is a
    :class:`mathrecipe.grading.Grader`; text-identical answers never reach it). ``invalid`` counts samples that ended
    without a valid answer.
    """

    answer_format: str = INT_FORMAT
    grader: Any = None
    answers: list[Vote] = field(default_factory=list)  # distinct answers, in the order first seen
    counts: list[int] = field(default_factory=list)
    invalid: int = 0

    def add(self, raw: str | None) -> Vote | None:
        """Count one sample's answer; returns what it voted for (None: an invalid vote)."""
        vote: Vote | None
        if self.answer_format == INT_FORMAT:
            vote = int_answer(raw)
            j = self.answers.index(vote) if vote in self.answers else -1
        else:
            vote = raw.strip() if raw and raw.strip() else None
            j = self._equivalent(vote) if vote is not None else -1
        if vote is None:
            self.invalid += 1
            return None
        if j < 0:
            self.answers.append(vote)
            self.counts.append(1)
            return vote
        self.counts[j] += 1
        return self.answers[j]

    def _equivalent(self, vote: str) -> int:
        if vote in self.answers:
            return self.answers.index(vote)
        if not self.answers:
            return -1
        if self.grader is None:
            from mathrecipe.grading import default_grader

            self.grader = default_grader()
        same = self.grader.verify_many([str(a) for a in self.answers], [vote] * len(self.answers))
        return next((j for j, ok in enumerate(same) if ok), -1)

    @property
    def votes(self) -> int:
        return sum(self.counts)

    def winner(self) -> Vote | None:
        """The answer with the most votes; a tie goes to the one seen first (as ``metrics.majority_vote``)."""
        if not self.counts:
            return None
        best = max(range(len(self.counts)), key=lambda j: (self.counts[j], -j))
        return self.answers[best]

    def as_dict(self) -> dict[str, int]:
        return {str(a): c for a, c in zip(self.answers, self.counts)}


def top_two(counts: Sequence[int]) -> tuple[int, int]:
    """(most votes, second most votes); 0 where there is no such answer."""
    ranked = sorted(counts, reverse=True)
    return (ranked[0] if ranked else 0), (ranked[1] if len(ranked) > 1 else 0)
