"""When this process started, on the ``time.monotonic`` clock: a competition's time limit covers the whole process
(interpreter start, imports, model loading), so ``mathrecipe solve`` counts its ``--time-limit`` from there.

Measured on a loaded 2-core machine, importing torch and transformers and loading the toy model took 6-13 s before
``mathrecipe solve`` could read its own clock, and the interpreter's teardown after the last file was written took
another 1-3 s: a time limit counted from the command's start overran by both.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

# The portable fallback's anchor: the first import of mathrecipe.solve, with the CPU time spent before it (the
# interpreter's start and imports are almost all CPU work).
_IMPORTED_AT = time.monotonic() - time.process_time()


def linux_process_age(stat: str, uptime: str, ticks_per_second: int) -> float:
    """Seconds since the process started, from ``/proc/self/stat`` and ``/proc/uptime`` (Linux).

    Field 22 of stat (``starttime``) is the start in clock ticks after boot; the first field of uptime is the
    seconds since boot (both on the boot clock): age = uptime - starttime / ticks. Fields are counted after the
    command name, which is in parentheses and may hold spaces.
    """
    fields = stat[stat.rindex(")") + 2:].split()
    start_ticks = int(fields[19])  # field 22 overall; fields[0] is field 3 (state)
    return max(0.0, float(uptime.split()[0]) - start_ticks / ticks_per_second)


def process_started_at() -> float:
    """``time.monotonic()`` at this process's start: from /proc on Linux (to a clock tick, 10 ms), otherwise from
    psutil when installed, otherwise the first import of mathrecipe.solve less the CPU time used before it."""
    now = time.monotonic()
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = Path("/proc/uptime").read_text()
        return now - linux_process_age(stat, uptime, os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil  # type: ignore[import-untyped]

        return now - max(0.0, time.time() - psutil.Process().create_time())
    except Exception:  # not installed, or no access: the fallback below
        return min(now, _IMPORTED_AT)


class Watchdog:
    """The time limit's last line: at ``at`` (``time.monotonic``), if the command has not finished, ``on_fire``
    writes what is known and the process ends (``exit(0)``), whatever the main thread is doing.

    The solver plans every generate call within the limit, but some steps have no bound it can set: loading the
    model (a busy machine took 0.5-1.5 s after start-up had left barely that), a tokenizer or grader call, a slow
    moment inside a call. Measured from outside on a 2-core machine beside two busy loops, the command overran a
    7.3 s limit by up to 0.9 s. A competition kills an overrunning notebook (no answer counts), so this thread ends
    it first. The owner guards the state ``on_fire`` reads with :attr:`lock`; the watchdog waits for it at most
    ``lock_wait`` seconds (the owner's writes are atomic per file, so ending without it loses no file).
    Only for a process that is the command itself: it must never end a caller's Python process.
    """

    def __init__(self, at: float, on_fire: Any, clock: Any = time.monotonic, exit: Any = os._exit,
                 lock_wait: float = 0.1) -> None:
        import threading

        self.at, self.on_fire, self.clock, self.exit, self.lock_wait = at, on_fire, clock, exit, lock_wait
        self.lock = threading.RLock()
        self.fired = False
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mathrecipe-solve-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """The command finished in time: the watchdog ends without firing."""
        self._cancelled.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._cancelled.wait(max(0.0, self.at - self.clock())):
            if self.clock() >= self.at:
                break
        if self._cancelled.is_set():
            return
        got = self.lock.acquire(timeout=self.lock_wait)
        try:
            if self._cancelled.is_set():
                return
            self.fired = True
            try:
                self.on_fire()
            finally:
                self.exit(0)
        finally:
            if got:
                self.lock.release()
