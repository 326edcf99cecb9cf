"""One verification in this process: math-verify with gold first, both parsed as boxed LaTeX. Runs in the workers.

No ``eval`` and no ``sympify`` of raw model text: math-verify parses LaTeX.
"""

from __future__ import annotations

import time

from mathrecipe.grading.protocol import Outcome


def verify_in_process(gold: str, pred: str, parse_timeout: int) -> bool:
    """Raw math-verify: ``verify(gold, pred)`` (not symmetric: gold first), both parsed as ``\\boxed{...}``.

    ``parse_timeout`` is math-verify's own ``signal.alarm`` bound (seconds, main thread only); when it fires,
    math-verify returns "not equal" without saying so.
    """
    from math_verify import parse, verify

    g = parse("\\boxed{" + gold + "}", parsing_timeout=parse_timeout)
    if not g:
        return False
    p = parse("\\boxed{" + pred + "}", parsing_timeout=parse_timeout)
    if not p:
        return False
    return bool(verify(g, p, timeout_seconds=parse_timeout))


def judge(gold: str, pred: str, parse_timeout: int) -> Outcome:
    """The outcome of one job: a real verdict, an error, or an "alarm" (a "wrong" that may be the alarm's doing).

    math-verify swallows its alarm, so a wrong answer that took >= ``parse_timeout`` seconds cannot be told apart
    from a cut-short one; it is reported as "alarm" (never cached), since the alarm needs that long to fire.
    A "right" is always real: the alarm only ever turns answers into "wrong".
    """
    from math_verify.errors import TimeoutException

    t = time.monotonic()
    try:
        ok = verify_in_process(gold, pred, parse_timeout)
    except TimeoutException:
        return Outcome("alarm", False, f"math-verify's {parse_timeout}s alarm fired")
    except Exception as e:  # a parse/verify error: "not verified equal", reported upward
        return Outcome("error", False, f"{type(e).__name__}: {e}")
    elapsed = time.monotonic() - t
    if not ok and elapsed >= parse_timeout:
        return Outcome("alarm", False, f"wrong after {elapsed:.1f}s, as long as math-verify's {parse_timeout}s alarm")
    return Outcome("verdict", ok)
