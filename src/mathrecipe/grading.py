"""What counts as correct: answer extraction and hang-proof verification.

The single source of truth for "correct" -- rewards, evaluation and data filters all call it.

math-verify's own timeout uses ``signal.alarm``: it fails off the main thread (Math-Verify #50/#55) and cannot
interrupt sympy's C code (Math-Verify #65). So verification runs in worker processes, each answer under a hard
wall-clock bound; a worker that overruns is killed and replaced, and that answer counts as wrong (and is logged).
No ``eval`` and no ``sympify`` of raw model text happens here or in the workers: math-verify parses LaTeX.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

log = logging.getLogger(__name__)

_BOXED = ("\\boxed", "\\fbox")


def _boxed_spans(text: str) -> list[tuple[str, int]]:
    """(content, end offset) of every complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces handled), in order."""
    out: list[tuple[str, int]] = []
    i = 0
    n = len(text)
    while i < n:
        starts = [(text.find(tag, i), tag) for tag in _BOXED]
        starts = [(s, t) for s, t in starts if s >= 0]
        if not starts:
            break
        s, tag = min(starts)
        j = s + len(tag)
        while j < n and text[j] == " ":
            j += 1
        if j < n and text[j] == "{":
            depth, k = 0, j
            while k < n:
                if text[k] == "{":
                    depth += 1
                elif text[k] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            if depth == 0 and k < n:
                out.append((text[j + 1 : k].strip(), k + 1))
                i = k + 1
                continue
            break  # unbalanced: the text was cut off inside this box
        if j > s + len(tag) and j < n:  # "\boxed 5": a single token after a space
            k = j
            while k < n and not text[k].isspace() and text[k] not in "$.,":
                k += 1
            if k > j:
                out.append((text[j:k], k))
            i = k
            continue
        i = j
    return out


boxed_spans = _boxed_spans  # public: (content, end offset) of every complete box, in order


def extract_answer(text: str | None) -> str | None:
    """The final answer: the content of the last complete ``\\boxed{...}`` in ``text``; None when there is none."""
    if not text:
        return None
    spans = [c for c, _ in _boxed_spans(text) if c]
    return spans[-1] if spans else None


def answer_end(text: str | None) -> int | None:
    """Character offset just past the last complete, non-empty ``\\boxed{...}``; None when there is none."""
    if not text:
        return None
    ends = [e for c, e in _boxed_spans(text) if c]
    return ends[-1] if ends else None


# ----------------------------------------------------------------------------------------------- workers


def _verify_in_process(gold: str, pred: str, parse_timeout: int) -> bool:
    """Raw math-verify: gold first (``verify(gold, pred)`` is not symmetric), both parsed as boxed LaTeX."""
    from math_verify import parse, verify

    g = parse("\\boxed{" + gold + "}", parsing_timeout=parse_timeout)
    if not g:
        return False
    p = parse("\\boxed{" + pred + "}", parsing_timeout=parse_timeout)
    if not p:
        return False
    return bool(verify(g, p, timeout_seconds=parse_timeout))


def _worker_main(conn: Connection, parse_timeout: int) -> None:
    # Runs on the worker's main thread, so math-verify's signal.alarm works here; the parent's hard
    # kill covers what the alarm cannot interrupt.
    import math_verify  # noqa: F401  (import once, before the first job)

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    conn.send("ready")  # start-up (spawn, sympy import) must not count against the first answer's bound
    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        gold, pred = job
        try:
            ok, err = _verify_in_process(gold, pred, parse_timeout), None
        except Exception as e:  # a parse/verify error means "not verified equal", reported upward
            ok, err = False, f"{type(e).__name__}: {e}"
        try:
            conn.send((ok, err))
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Worker:
    proc: mp.process.BaseProcess
    conn: Connection
    job: int | None = None  # index of the job in flight
    deadline: float = 0.0


@dataclass
class GradeResult:
    extracted: str | None
    correct: bool


class Grader:
    """A pool of verification workers with a hard wall-clock bound per answer.

    ``verify_many`` is thread-safe (calls are serialised) and may be called from any thread.
    Results are cached by (gold, prediction), so the several rewards of one GRPO step grade each answer once.
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout: float = 5.0,
        cache_size: int = 200_000,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"grading timeout must be > 0 seconds, got {timeout}")
        self.max_workers = max(1, workers if workers is not None else min(4, os.cpu_count() or 1))
        self.timeout = float(timeout)
        # math-verify's own (alarm-based) bound, a little inside ours, so most slow answers end cleanly.
        self._parse_timeout = max(1, int(self.timeout * 0.6))
        self._ctx = mp.get_context("spawn")  # never fork a process that holds torch threads
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._cache_size = cache_size
        self._pid = os.getpid()
        self.timeouts = 0  # answers that overran the bound (counted as wrong)
        self.errors = 0  # answers whose parse/verify raised (counted as wrong)

    # -- pool management
    _STARTUP_TIMEOUT = 120.0

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, self._parse_timeout), daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def _await_ready(self, workers: list[_Worker]) -> None:
        for w in workers:
            if not w.conn.poll(self._STARTUP_TIMEOUT) or w.conn.recv() != "ready":
                raise RuntimeError(f"a grading worker did not start within {self._STARTUP_TIMEOUT:.0f}s")

    def _spawn(self) -> _Worker:
        w = self._start()
        self._await_ready([w])
        return w

    def _kill(self, w: _Worker) -> None:
        try:
            w.conn.close()
        except OSError:
            pass
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=5)

    def close(self) -> None:
        """Stop every worker (they are daemons, so an unclosed grader never outlives the program)."""
        with self._lock:
            for w in self._workers:
                try:
                    w.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
            for w in self._workers:
                w.proc.join(timeout=1)
                self._kill(w)
            self._workers = []

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- verification
    def _cache_get(self, key: tuple[str, str]) -> bool | None:
        v = self._cache.get(key)
        if v is not None:
            self._cache.move_to_end(key)
        return v

    def _cache_put(self, key: tuple[str, str], value: bool) -> None:
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def verify_many(self, golds: Sequence[str], preds: Sequence[str | None]) -> list[bool]:
        """``verify(gold, pred)`` for each pair; a missing prediction, an error or an overrun counts as wrong."""
        if len(golds) != len(preds):
            raise ValueError(f"verify_many: {len(golds)} gold answers but {len(preds)} predictions")
        results: list[bool | None] = [None] * len(golds)
        todo: dict[tuple[str, str], list[int]] = {}
        with self._lock:
            for i, (g, p) in enumerate(zip(golds, preds)):
                if p is None or not str(p).strip():
                    results[i] = False
                    continue
                g, p = str(g).strip(), str(p).strip()
                if g == p:  # identical text is equal under any reading: skip the parser
                    results[i] = True
                    continue
                cached = self._cache_get((g, p))
                if cached is not None:
                    results[i] = cached
                else:
                    todo.setdefault((g, p), []).append(i)
            if todo:
                for key, ok in zip(todo, self._run(list(todo))):
                    self._cache_put(key, ok)
                    for i in todo[key]:
                        results[i] = ok
        return [bool(r) for r in results]

    def _run(self, jobs: list[tuple[str, str]]) -> list[bool]:
        if os.getpid() != self._pid:  # inherited through fork: the pipes belong to the parent
            self._workers, self._pid = [], os.getpid()
        want = min(self.max_workers, len(jobs))
        new = [self._start() for _ in range(want - len(self._workers))]
        self._await_ready(new)  # started together, so the pool is up in about one start-up time
        self._workers.extend(new)
        out: list[bool] = [False] * len(jobs)
        pending = list(range(len(jobs) - 1, -1, -1))  # a stack, popped from the end
        idle = list(self._workers)
        busy: dict[Connection, _Worker] = {}

        def dispatch(w: _Worker) -> None:
            i = pending.pop()
            w.job = i
            w.deadline = time.monotonic() + self.timeout
            try:
                w.conn.send(jobs[i])
                busy[w.conn] = w
            except (BrokenPipeError, OSError):  # the worker died between jobs: replace it, retry the job
                pending.append(i)
                self._replace(w)
                idle.append(self._workers[-1])

        while pending or busy:
            while pending and idle:
                dispatch(idle.pop())
            if not busy:
                continue
            now = time.monotonic()
            wait_for = max(0.0, min(w.deadline for w in busy.values()) - now)
            ready = wait(list(busy), timeout=wait_for)
            for conn in ready:
                w = busy.pop(conn)
                i = w.job
                try:
                    ok, err = conn.recv()
                except (EOFError, OSError):  # crashed mid-job (out of memory, say): wrong, and replaced
                    ok, err = False, "worker died"
                    self._replace(w)
                    w = self._workers[-1]
                if err is not None:
                    self.errors += 1
                    log.debug("grading error on %r: %s", jobs[i], err)
                out[i] = bool(ok)
                w.job = None
                idle.append(w)
            now = time.monotonic()
            for conn, w in list(busy.items()):
                if conn not in ready and now >= w.deadline:
                    busy.pop(conn)
                    self.timeouts += 1
                    gold, pred = jobs[w.job]
                    log.warning(
                        "grading overran %.1fs and its worker was killed; counted wrong: gold=%r pred=%r",
                        self.timeout, gold[:200], pred[:200],
                    )
                    out[w.job] = False
                    self._replace(w)
                    idle.append(self._workers[-1])
        return out

    def _replace(self, w: _Worker) -> None:
        self._kill(w)
        self._workers.remove(w)
        self._workers.append(self._spawn())

    def grade(self, completions: Sequence[str], golds: Sequence[str]) -> list[GradeResult]:
        """Extract each completion's final answer and verify it against its gold answer."""
        extracted = [extract_answer(c) for c in completions]
        correct = self.verify_many(golds, extracted)
        return [GradeResult(e, c) for e, c in zip(extracted, correct)]


_default: Grader | None = None
_default_lock = threading.Lock()


def default_grader() -> Grader:
    """The process-wide grader, started lazily and closed at exit."""
    global _default
    with _default_lock:
        if _default is None or _default._pid != os.getpid():
            _default = Grader()
            atexit.register(_default.close)
        return _default


def is_correct(completion: str, gold: str) -> bool:
    """True when the last ``\\boxed{}`` answer of ``completion`` is mathematically equal to ``gold``."""
    return default_grader().grade([completion], [gold])[0].correct


def grade_many(completions: Sequence[str], golds: Sequence[str]) -> list[GradeResult]:
    """Grade many completions at once (in parallel worker processes, each answer under the hard bound)."""
    return default_grader().grade(completions, golds)
