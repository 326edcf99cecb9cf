"""Answer extraction: the content of ``\\boxed{...}`` / ``\\fbox{...}``, in one linear pass over the text.

Rules (LaTeX's own): a backslash escapes the next character, so ``\\{`` and ``\\}`` are not braces and ``\\\\boxed``
is a line break followed by the word "boxed"; whitespace (newlines included) may stand between ``\\boxed`` and its
``{``; ``\\boxed 5`` (whitespace, then one bare token) is a box too. A box whose braces never close (a completion cut
off inside it) ends the scan: nothing after it is complete.
"""

from __future__ import annotations

import re

# A box command not followed by a letter (``\boxedfoo`` is another macro), then any whitespace, then -- the common
# case, matched in C -- a brace group with no braces or backslashes inside (group 2).
_TAG = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])(\s*)(?:\{([^{}\\]*)\})?")
# An escape and the character it escapes; replaced by two spaces, it leaves only real braces (same offsets).
_ESCAPE = re.compile(r"\\.", re.DOTALL)
# ``\boxed 5.``: a bare token runs to whitespace or to ``$ . ,``.
_BARE = re.compile(r"[^\s$.,]+")


def _escaped(text: str, i: int) -> bool:
    """True when the character at ``i`` is escaped: an odd number of backslashes stands right before it."""
    k = i
    while k > 0 and text[k - 1] == "\\":
        k -= 1
    return (i - k) % 2 == 1


def _closing_brace(masked: str, j: int) -> int:
    """Offset of the brace closing the one at ``j`` in escape-free text; -1 when none does.

    depth after the k-th "}" = (number of "{" in masked[j : that "}"]) - k; it closes at depth 0. Each stretch of
    text is counted once, in C, so the cost is linear in the box's length.
    """
    depth, i = 0, j
    while True:
        c = masked.find("}", i)
        if c < 0:
            return -1
        depth += masked.count("{", i, c) - 1
        if depth == 0:
            return c
        i = c + 1


def boxed_spans(text: str) -> list[tuple[str, int]]:
    """(content, end offset) of every complete box in ``text``, in order; contents are stripped (may be empty).

    The end offset is just past the box's closing brace (or its bare token). A box nested inside another is part
    of the outer one's content. Linear in ``len(text)``: a few passes in C (regex, find, count), and Python work
    only per box and per ``}`` inside a box with nested braces.
    """
    out: list[tuple[str, int]] = []
    pos = 0  # everything before pos belongs to a box already taken
    n = len(text)
    masked: str | None = None  # the text with escapes blanked, made on the first box that needs it
    for m in _TAG.finditer(text):
        start = m.start()
        if start < pos or (start and text[start - 1] == "\\" and _escaped(text, start)):
            continue
        flat = m.group(2)
        if flat is not None:
            out.append((flat.strip(), m.end()))
            pos = m.end()
            continue
        j = m.end()
        if j < n and text[j] == "{":
            if masked is None:
                masked = _ESCAPE.sub("  ", text)
            close = _closing_brace(masked, j)
            if close < 0:
                break  # unbalanced: the text was cut off inside this box
            out.append((text[j + 1 : close].strip(), close + 1))
            pos = close + 1
        elif m.group(1):  # whitespace after the tag, then a bare token: "\boxed 5"
            bare = _BARE.match(text, j)
            if bare:
                out.append((bare.group(), bare.end()))
                pos = bare.end()
    return out


def extract_answer(text: str | None) -> str | None:
    """The final answer: the content of the last complete, non-empty box in ``text``; None when there is none."""
    if not text:
        return None
    spans = [c for c, _ in boxed_spans(text) if c]
    return spans[-1] if spans else None
