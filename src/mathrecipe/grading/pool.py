"""Verification worker processes with a hard wall-clock bound per job (no cache, no extraction: see ``Grader``).

Each worker is a fresh interpreter, ``python -m mathrecipe.grading.worker``, talking over its stdin/stdout pipes
(``protocol``). Nothing of the caller is re-imported, so the pool works from any script, thread or forked child.
A job that overruns the bound has its worker killed (SIGKILL: nothing inside it, not even sympy's C code, can delay that). Start-up is
never on an answer's critical path: a replacement starts in the background, jobs go only to workers that have said
"ready", and the pool refills as replacements report ready (possibly during a later ``run``).

Not thread-safe on its own: ``Grader`` calls it under its lock.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import mathrecipe
from mathrecipe.grading.protocol import READY, Outcome, decode, encode, write_all

STARTUP_TIMEOUT = 120.0  # seconds for a worker to import math-verify and say "ready"


def worker_command(parse_timeout: int) -> list[str]:
    """argv of one worker. ``-P``: the caller's working directory stays off the worker's ``sys.path``, so a stray
    ``math_verify.py`` there cannot shadow the real one."""
    return [sys.executable, "-P", "-m", "mathrecipe.grading.worker", str(parse_timeout)]


def _worker_env() -> dict[str, str]:
    # The worker imports the very mathrecipe the caller imported (same protocol), even when the caller found it
    # through a sys.path edit rather than an install.
    root = str(Path(mathrecipe.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    started: float
    ready: bool = False
    job: int | None = None  # index of the job in flight
    deadline: float = 0.0
    buf: bytes = b""


def _shutdown(workers: list[_Worker], dying: list[subprocess.Popen[bytes]], grace: float = 1.0) -> None:
    """Stop every worker: idle ones exit on EOF within ``grace`` seconds, the rest are killed. Reaps all."""
    for w in workers:
        _close_pipe(w.proc.stdin)
        if w.job is not None or not w.ready:
            w.proc.kill()
    end = time.monotonic() + grace
    for w in workers:
        try:
            w.proc.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
        _close_pipe(w.proc.stdout)
    for p in dying:
        p.wait()
    workers.clear()
    dying.clear()


def _close_pipe(pipe: IO[bytes] | None) -> None:
    if pipe is not None:
        try:
            pipe.close()
        except OSError:
            pass


class WorkerPool:
    """Up to ``size`` worker processes; ``run`` gives each job ``timeout`` seconds of wall-clock time."""

    def __init__(self, size: int, timeout: float, parse_timeout: int) -> None:
        self.size = size
        self.timeout = timeout
        self.parse_timeout = parse_timeout
        self._workers: list[_Worker] = []
        self._dying: list[subprocess.Popen[bytes]] = []  # killed, not yet reaped
        self._inherited: list[subprocess.Popen[bytes]] = []  # a parent's workers, seen after a fork: never touched
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._dying)  # also runs at exit
        _pools.add(self)

    # -- lifecycle
    def close(self) -> None:
        """Stop every worker (safe to call twice; also done at interpreter exit)."""
        self._finalizer()

    def forget(self) -> None:
        """In a forked child: drop the parent's workers without killing or waiting on them (they are not ours)."""
        for w in self._workers:
            _close_pipe(w.proc.stdin)  # our copies of the fds only; the parent's stay open
            _close_pipe(w.proc.stdout)
            self._inherited.append(w.proc)
        self._inherited.extend(self._dying)
        self._workers.clear()  # in place: the finalizer holds these lists
        self._dying.clear()

    def _start(self) -> _Worker:
        proc = subprocess.Popen(
            worker_command(self.parse_timeout),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_worker_env(),
            bufsize=0,
            start_new_session=True,  # Ctrl-C reaches the caller, which decides; workers go when their stdin closes
        )
        return _Worker(proc, time.monotonic())

    def _retire(self, w: _Worker, sel: selectors.BaseSelector | None) -> None:
        """Kill ``w`` without waiting for it (reaped later), and start its replacement in the background."""
        if sel is not None:
            sel.unregister(w.proc.stdout)
        w.proc.kill()
        _close_pipe(w.proc.stdin)
        _close_pipe(w.proc.stdout)
        self._dying.append(w.proc)
        new = self._start()
        self._workers[self._workers.index(w)] = new
        if sel is not None:
            sel.register(new.proc.stdout, selectors.EVENT_READ, new)

    def _reap(self) -> None:
        self._dying[:] = [p for p in self._dying if p.poll() is None]

    # -- jobs
    def run(self, jobs: Sequence[tuple[str, str]]) -> list[Outcome]:
        """The outcome of each (gold, pred) job, in order, each within ``timeout`` seconds of being handed out."""
        self._reap()
        out: list[Outcome | None] = [None] * len(jobs)
        if not jobs:
            return []
        while len(self._workers) < min(self.size, len(jobs)):
            self._workers.append(self._start())  # started together: the pool is up in about one start-up time
        pending = deque(range(len(jobs)))
        sel = selectors.DefaultSelector()
        try:
            for w in self._workers:
                sel.register(w.proc.stdout, selectors.EVENT_READ, w)
            while pending or any(w.job is not None for w in self._workers):
                for w in list(self._workers):
                    if pending and w.ready and w.job is None:
                        self._send(w, pending, jobs, sel)
                for key, _ in sel.select(self._wait_time()):
                    self._receive(key.data, out, sel)
                self._enforce_bounds(jobs, out, sel)
        except BaseException:
            # Jobs still in flight would answer into a later run: end them (their replacements start now).
            for w in list(self._workers):
                if w.job is not None:
                    self._retire(w, None)
            raise
        finally:
            sel.close()
        missing = [i for i, o in enumerate(out) if o is None]
        if missing:  # never turn a lost job into a silent "wrong"
            raise RuntimeError(f"grading pool lost {len(missing)} job(s), the first at index {missing[0]}")
        return [o for o in out if o is not None]

    def _send(
        self, w: _Worker, pending: deque[int], jobs: Sequence[tuple[str, str]], sel: selectors.BaseSelector
    ) -> None:
        i = pending.popleft()
        w.job, w.deadline = i, time.monotonic() + self.timeout
        try:
            write_all(w.proc.stdin.fileno(), encode(list(jobs[i])))
        except OSError:  # it died while idle: replace it and hand the job to the next ready worker
            w.job = None
            pending.appendleft(i)
            self._retire(w, sel)

    def _receive(self, w: _Worker, out: list[Outcome | None], sel: selectors.BaseSelector) -> None:
        data = os.read(w.proc.stdout.fileno(), 1 << 16)
        if not data:
            self._lost(w, out, sel)
            return
        w.buf += data
        while b"\n" in w.buf:
            line, w.buf = w.buf.split(b"\n", 1)
            msg = decode(line)
            if not w.ready and msg == READY:
                w.ready = True
            elif w.ready and w.job is not None:
                out[w.job] = Outcome(*msg)
                w.job = None
            else:
                raise RuntimeError(f"grading worker {w.proc.pid} broke the protocol: {line[:200]!r}")

    def _lost(self, w: _Worker, out: list[Outcome | None], sel: selectors.BaseSelector) -> None:
        """The worker closed its stdout: it died (out of memory, killed by someone)."""
        try:
            code = w.proc.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        if not w.ready:
            sel.unregister(w.proc.stdout)
            self._workers.remove(w)
            _shutdown([w], [], grace=0.0)
            raise RuntimeError(
                f"a grading worker exited (code {code}) before it was ready; its error is on stderr above "
                f"(command: {' '.join(worker_command(self.parse_timeout))})"
            )
        if w.job is not None:
            out[w.job] = Outcome("crash", False, f"worker exited with code {code} mid-answer")
            w.job = None
        self._retire(w, sel)

    def _wait_time(self) -> float:
        now = time.monotonic()
        ends = [w.deadline for w in self._workers if w.job is not None]
        ends += [w.started + STARTUP_TIMEOUT for w in self._workers if not w.ready]
        if not ends:
            raise RuntimeError("grading pool: jobs are pending but no worker is busy or starting")
        return max(0.0, min(ends) - now)

    def _enforce_bounds(
        self, jobs: Sequence[tuple[str, str]], out: list[Outcome | None], sel: selectors.BaseSelector
    ) -> None:
        now = time.monotonic()
        for w in list(self._workers):
            if w.job is not None and now >= w.deadline:
                out[w.job] = Outcome("timeout", False, f"over the {self.timeout:g}s bound; its worker was killed")
                w.job = None
                self._retire(w, sel)
            elif not w.ready and now >= w.started + STARTUP_TIMEOUT:
                sel.unregister(w.proc.stdout)
                self._workers.remove(w)
                _shutdown([w], [], grace=0.0)
                raise RuntimeError(f"a grading worker did not start within {STARTUP_TIMEOUT:.0f}s")


_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _forget_all_after_fork() -> None:
    for p in list(_pools):
        p.forget()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_all_after_fork)
