"""Decontamination: drop training problems that share a word n-gram with any evaluation problem."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

# LaTeX spacing commands carry no content: "a\,b", "a\;b", "a\quad b" and "a b" must normalise alike.
_LATEX_SPACE = re.compile(r"\\(?:[,;:!> ]|quad|qquad|enspace|thinspace)|~")
_WS = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower-case, LaTeX spacing commands as spaces, runs of whitespace as one space."""
    return _WS.sub(" ", _LATEX_SPACE.sub(" ", text.lower())).strip()


def ngrams(text: str, n: int) -> list[str]:
    """Word n-grams of the normalised text; a text shorter than n words is one gram (matched whole)."""
    words = normalise_text(text).split()
    if not words:
        return []
    if len(words) < n:
        return [" ".join(words)]
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def build_index(benchmarks: dict[str, list[dict[str, Any]]], n: int) -> dict[str, str]:
    """n-gram -> "benchmark:id" of the first benchmark item that contains it."""
    index: dict[str, str] = {}
    for name, problems in benchmarks.items():
        for p in problems:
            for g in ngrams(p["problem"], n):
                index.setdefault(g, f"{name}:{p['id']}")
    return index


def first_match(text: str, index: dict[str, str], n: int, min_overlap: float = 0.0) -> tuple[str, str] | None:
    """(matched benchmark item, a shared n-gram), or None.

    min_overlap = 0: any shared n-gram is a match. min_overlap > 0: the shared n-grams must be at least that share of
    the text's n-grams. Measured on 195 real historical AIME rows vs MATH-500/AIME24/AIME25/AMC23 (8-grams): any
    shared 8-gram flags 57 rows, nearly all boilerplate ("where $m$ and $n$ are relatively prime positive integers");
    a 0.5 share flags exactly the 2 problems that MATH-500 really contains (AIME 2010 I #6, AIME 2015 II #6).
    """
    grams = ngrams(text, n)
    hits = [g for g in grams if g in index]
    if not hits or len(hits) < min_overlap * len(grams):
        return None
    item = Counter(index[g] for g in hits).most_common(1)[0][0]
    return item, next(g for g in hits if index[g] == item)
