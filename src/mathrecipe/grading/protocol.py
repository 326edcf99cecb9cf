"""The wire format between a worker pool and its worker processes, and what one job's outcome can be.

One JSON array per line (JSON escapes newlines inside strings, so a newline always ends a frame):
  pool -> worker: ``[gold, pred]`` per job; closing the worker's stdin tells it to exit.
  worker -> pool: ``["ready"]`` once math-verify is imported, then ``[kind, verdict, detail]`` per job, in order.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal, NamedTuple

READY = ["ready"]

# verdict: math-verify answered (the only kind that may be cached); error: parse/verify raised;
# alarm: a "wrong" that took as long as math-verify's own alarm, so the alarm may have cut it short;
# timeout: the pool's hard bound ran out and the worker was killed; crash: the worker died mid-job.
Kind = Literal["verdict", "error", "alarm", "timeout", "crash"]


class Outcome(NamedTuple):
    kind: Kind
    verdict: bool  # False for every kind but "verdict"
    detail: str | None = None


def encode(message: Any) -> bytes:
    return (json.dumps(message) + "\n").encode("ascii")  # ascii: lone surrogates in model text survive as escapes


def decode(line: bytes) -> Any:
    return json.loads(line)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (a pipe may take a large frame in several writes)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
