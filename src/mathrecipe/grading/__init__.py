"""What counts as correct: answer extraction and hang-proof verification.

The single source of truth for "correct" -- rewards, evaluation and data filters all call it. An answer is the
content of the last complete ``\\boxed{}`` (one linear pass, LaTeX escapes respected); it is correct when
``math_verify.verify(gold, pred)`` (gold first) says so.

math-verify's own timeout uses ``signal.alarm``: it fails off the main thread (Math-Verify #50/#55) and cannot
interrupt sympy's C code (Math-Verify #65). So verification runs in worker processes, fresh interpreters started
as ``python -m mathrecipe.grading.worker`` -- never a fork or a multiprocessing spawn, so it works from any script
(fed on stdin, without a main guard), thread or forked child. Each answer has a hard wall-clock bound: a worker that
overruns is killed, and that answer counts as wrong (and is logged); its replacement starts in the background.
Workers do math-verify's lazy imports before taking answers, so no answer's bound pays for them.
Only real verdicts are cached: an overrun (ours, or math-verify's own alarm), a crash or an error counts as wrong
for that call only and is verified afresh when asked again -- it tells how loaded the machine was, not what the
answer is. No ``eval`` and no ``sympify`` of raw model text happens here or in the workers: math-verify parses LaTeX.

One job per module: ``extract`` (answers from text), ``pool`` (worker processes, the hard bound), ``worker`` and
``protocol`` (the worker process and its pipe format), ``verify`` (one math-verify call), ``cache`` (real verdicts);
``Grader``, here, puts them together and counts.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from mathrecipe.errors import MathRecipeError
from mathrecipe.grading.cache import VerdictCache
from mathrecipe.grading.extract import boxed_spans, extract_answer
from mathrecipe.grading.pool import WorkerPool
from mathrecipe.grading.protocol import Outcome

__all__ = [
    "GradeResult",
    "Grader",
    "boxed_spans",
    "default_grader",
    "extract_answer",
    "is_correct",
]

log = logging.getLogger(__name__)


@dataclass
class GradeResult:
    extracted: str | None
    correct: bool


class Grader:
    """Verification with a hard wall-clock bound per answer, a cache of verdicts, and counters.

    ``verify_many`` is thread-safe (calls are serialised) and may be called from any thread. Verdicts are cached by
    (gold, prediction), so the several rewards of one GRPO step grade each answer once. ``timeouts`` counts answers
    that overran (the hard bound, or math-verify's own alarm); ``errors`` counts answers whose parse/verify raised or
    whose worker died. Both count as wrong, and neither is cached.
    """

    def __init__(self, workers: int | None = None, timeout: float = 5.0, cache_size: int = 200_000) -> None:
        if not timeout > 0:
            raise MathRecipeError(f"grading timeout must be > 0 seconds, got {timeout}; pass e.g. timeout=5")
        if workers is not None and workers < 1:
            raise MathRecipeError(f"grading workers must be >= 1, got {workers}; pass None for min(4, CPUs)")
        self.max_workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        self.timeout = float(timeout)
        # math-verify's own (alarm-based) bound, a little inside ours, so most slow answers end without a kill.
        self._parse_timeout = max(1, int(self.timeout * 0.6))
        self._pool = WorkerPool(self.max_workers, self.timeout, self._parse_timeout)
        self._cache = VerdictCache(cache_size)
        self._lock = threading.Lock()
        self.timeouts = 0
        self.errors = 0
        _graders.add(self)

    def close(self) -> None:
        """Stop every worker. The grader stays usable: a later call starts new ones."""
        with self._lock:
            self._pool.close()
            self._pool = WorkerPool(self.max_workers, self.timeout, self._parse_timeout)

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def verify_many(self, golds: Sequence[str], preds: Sequence[str | None]) -> list[bool]:
        """``verify(gold, pred)`` for each pair; a missing prediction, an error or an overrun counts as wrong."""
        if len(golds) != len(preds):
            raise ValueError(f"verify_many: {len(golds)} gold answers but {len(preds)} predictions")
        results: list[bool] = [False] * len(golds)
        todo: dict[tuple[str, str], list[int]] = {}
        with self._lock:
            for i, (g, p) in enumerate(zip(golds, preds)):
                if p is None or not str(p).strip():
                    continue
                g, p = str(g).strip(), str(p).strip()
                if g == p:  # identical text is equal under any reading: skip the parser
                    results[i] = True
                    continue
                cached = self._cache.get((g, p))
                if cached is not None:
                    results[i] = cached
                else:
                    todo.setdefault((g, p), []).append(i)
            if todo:
                for key, ok in zip(todo, self._run(list(todo))):
                    for i in todo[key]:
                        results[i] = ok
        return results

    def _run(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """math-verify on each (gold, pred) in the workers, no shortcut and no cache lookup; real verdicts are
        cached, the rest counted. Called under the lock (tests/test_data_benchmarks.py calls it directly)."""
        out = []
        for key, outcome in zip(pairs, self._pool.run(pairs)):
            if outcome.kind == "verdict":
                self._cache.put(key, outcome.verdict)
            else:
                self._count(key, outcome)
            out.append(outcome.verdict)
        return out

    def _count(self, key: tuple[str, str], outcome: Outcome) -> None:
        gold, pred = key[0][:200], key[1][:200]
        if outcome.kind in ("timeout", "alarm"):
            self.timeouts += 1
            log.warning("grading: %s; counted wrong, not cached: gold=%r pred=%r", outcome.detail, gold, pred)
        else:
            self.errors += 1
            level = logging.WARNING if outcome.kind == "crash" else logging.DEBUG
            log.log(level, "grading %s: %s; counted wrong, not cached: gold=%r pred=%r",
                    outcome.kind, outcome.detail, gold, pred)

    def grade(self, completions: Sequence[str], golds: Sequence[str]) -> list[GradeResult]:
        """Extract each completion's final answer and verify it against its gold answer."""
        extracted = [extract_answer(c) for c in completions]
        correct = self.verify_many(golds, extracted)
        return [GradeResult(e, c) for e, c in zip(extracted, correct)]


_graders: weakref.WeakSet[Grader] = weakref.WeakSet()
_default: Grader | None = None
_default_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would stay held forever in the child. The pools forget the
    # parent's workers themselves (pool.py); the caches stay: their verdicts are as true here.
    global _default_lock
    _default_lock = threading.Lock()
    for g in list(_graders):
        g._lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def default_grader() -> Grader:
    """The process-wide grader, started lazily; its workers stop at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Grader()
        return _default


def is_correct(completion: str, gold: str) -> bool:
    """True when the last ``\\boxed{}`` answer of ``completion`` is mathematically equal to ``gold``."""
    return default_grader().grade([completion], [gold])[0].correct
