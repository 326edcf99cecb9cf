"""Decontamination: drop training problems that share word n-grams with an evaluation problem.

The same ``normalise_text`` is the dedup key of the data build, so spacing variants are duplicates there too.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

# LaTeX spacing commands carry no content: "a\,b", "a\;b", "a\quad b" and "a b" must normalise alike. (A line break
# "\\" is set aside first, so that "\\ y" is not read as "\" + the spacing command "\ ".)
_LATEX_SPACE = re.compile(r"\\(?:[,;:!> ]|quad|qquad|enspace|thinspace)|~")
# Inline math cannot span a paragraph break: pairing "$" per paragraph keeps a stray "$" from flipping the rest.
_PARAGRAPH = re.compile(r"\n\s*\n")
# Each branch starts with a literal ("$" or a backslash; the lookbehind for an escaped dollar comes after it): the
# regex engine then skips ahead to those characters, 3x faster than with the lookbehind first.
_MATH = re.compile(
    r"\$\$(?<!\\\$\$)(?P<a>.+?)(?<!\\)\$\$"
    r"|\$(?<!\\\$)(?P<b>.+?)(?<!\\)\$"
    r"|\\\((?P<c>.+?)\\\)"
    r"|\\\[(?P<d>.+?)\\\]"
    r"|\\begin\{(?P<env>align|equation|gather|multline|eqnarray)(?P<star>\*?)\}(?P<e>.+?)\\end\{(?P=env)(?P=star)\}",
    re.S,
)
# In math, whitespace only separates a control word from a following letter ("\sin x"); elsewhere it is layout.
_CONTROL_WORD_SPACE = re.compile(r"(\\[a-z]+)\s+(?=[a-z])")
# Binary and relation operators get one space each side, so a formula splits into about as many words as it was
# usually written with (the n-gram size was calibrated on such words) whatever its spacing.
_OPS = re.compile(r"(<=|>=|[=+\-<>]|\\(?:leq?|geq?|neq?|cdot|times|pm|mp|div)(?![a-z]))")
# No whitespace around braces, "^" and "_", also outside math delimiters (a bare "\frac {a} {b}"). Replacements
# without group references stay in C (a template like r"\1" is expanded in Python for every match).
_GLUE_BEFORE = re.compile(r"\s+(?=[{}^_])")
_GLUE_AFTER = re.compile(r"(?<=[{^_])\s+")


def _math(m: re.Match[str]) -> str:
    inner = m[m.lastindex or 0]  # the span's content: the last group that closed, whichever branch matched
    if "\\" in inner:
        inner = _CONTROL_WORD_SPACE.sub("\\1\x00", inner)  # keep these separators through the squeeze
    inner = "".join(inner.split()).replace("\x00", " ")
    return "$" + " ".join(_OPS.split(inner)).strip() + "$"  # split keeps the operators: spaces around them


def normalise_text(text: str) -> str:
    """The comparison form of a problem: spacing and delimiter variants of the same text normalise alike.

    Lower-case; LaTeX spacing commands as spaces; every math span (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``,
    align/equation/gather environments) written as ``$..$`` with no whitespace inside except one space around
    operators (``= + - < > \\le \\cdot ...``) and after a control word before a letter; then no whitespace around
    ``{ } ^ _`` anywhere (a bare ``\\frac {a} {b}`` outside math too); runs of whitespace as one space. So
    ``$ x $`` = ``$x$`` and ``\\frac {a} {b}`` = ``\\frac{a}{b}``.
    """
    text = text.lower()
    if "\\" in text or "~" in text:
        text = _LATEX_SPACE.sub(" ", text.replace("\\\\", "\x01")).replace("\x01", "\\\\")
    if not any(c in text for c in "$\\{}^_"):  # plain text (no math): only whitespace to normalise
        return " ".join(text.split())
    # math spans first (canonical already), then the glue on the whole text: still one form for every spacing
    text = "\n\n".join(_MATH.sub(_math, para) for para in _PARAGRAPH.split(text))
    if any(c in text for c in "{}^_"):
        text = _GLUE_AFTER.sub("", _GLUE_BEFORE.sub("", text))
    return " ".join(text.split())


def ngrams(text: str, n: int) -> list[str]:
    """Word n-grams of the normalised text; a text shorter than n words is one gram (matched whole)."""
    words = normalise_text(text).split()
    if not words:
        return []
    if len(words) < n:
        return [" ".join(words)]
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


@dataclass(frozen=True)
class NgramIndex:
    """The benchmark items' n-grams: which items hold each gram, and how many distinct grams each item has."""

    n: int
    items: dict[str, tuple[str, ...]]  # gram -> "benchmark:id" of every item that contains it
    sizes: dict[str, int]  # "benchmark:id" -> its number of distinct grams


def build_index(benchmarks: dict[str, list[dict[str, Any]]], n: int) -> NgramIndex:
    """The n-gram index of every problem of every benchmark."""
    items: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for name, problems in benchmarks.items():
        for p in problems:
            key = f"{name}:{p['id']}"
            grams = set(ngrams(p["problem"], n))
            sizes[key] = len(grams)
            for g in grams:
                items.setdefault(g, []).append(key)
    return NgramIndex(n, {g: tuple(keys) for g, keys in items.items()}, sizes)


def first_match(text: str, index: NgramIndex, min_overlap: float = 0.0) -> tuple[str, str] | None:
    """(matched benchmark item, a shared n-gram), or None; the item is the one sharing the most distinct grams.

    With S = the distinct n-grams the text shares with one item, T = the text's and B = the item's distinct grams:
    min_overlap = 0 matches on any shared gram (|S| >= 1); min_overlap > 0 matches when
    max(|S| / |B|, |S| / |T|) >= min_overlap. The first share catches a verbatim item embedded in extra text (a
    copy inside 60 extra words shares all of B but only 0.375 of T); the second a text that is mostly the item.
    Measured on 195 real historical AIME rows vs MATH-500/AIME24/AIME25/AMC23 (8-grams): any shared 8-gram flags 58
    rows, nearly all boilerplate ("where $m$ and $n$ are relatively prime positive integers"); 0.5 flags exactly the
    2 problems that MATH-500 really contains (AIME 2010 I #6, AIME 2015 II #6).
    """
    # distinct grams in text order (not a set): ties and the reported gram are then the same in every process
    grams = list(dict.fromkeys(ngrams(text, index.n)))
    items = index.items
    hits = [items[g] for g in grams if g in items]
    if not hits:
        return None
    shared = Counter(k for keys in hits for k in keys)
    if min_overlap > 0:
        shared = Counter({k: s for k, s in shared.items()
                          if max(s / index.sizes[k], s / len(grams)) >= min_overlap})
    if not shared:
        return None
    item = shared.most_common(1)[0][0]
    return item, next(g for g in grams if item in items.get(g, ()))
