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
