"""What every bench records beside a timing: the machine's load, and min / median / max over repeats."""

from __future__ import annotations

import os
import statistics
from pathlib import Path


def loadavg() -> list[float]:
    """The 1/5/15-minute load averages (from /proc on Linux)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return list(os.getloadavg())


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max of a measurement over repeats, and how many there were."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}
