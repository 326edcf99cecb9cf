"""A grading worker process: ``python -m mathrecipe.grading.worker PARSE_TIMEOUT``.

The pool starts it as a fresh interpreter (never a fork, never a multiprocessing spawn), so no caller module is ever
re-imported: scripts fed on stdin, scripts without an ``if __name__ == "__main__":`` guard, notebooks and threads all
work. Jobs arrive on stdin and outcomes leave on the original stdout (see ``protocol``); anything else printed goes to
stderr. Jobs run on this process's main thread, so math-verify's ``signal.alarm`` works; the pool's hard kill covers
what the alarm cannot interrupt (sympy's C code).
"""

from __future__ import annotations

import logging
import os
import sys

from mathrecipe.grading.protocol import READY, decode, encode, write_all
from mathrecipe.grading.verify import judge

# Answers that make math-verify and sympy do their lazy imports (parser, simplify, sets, intervals: about a second
# on one core) before "ready", so that no answer's bound pays for them.
WARM_UP = [("1", "1.0"), ("(x+1)^2", "x^2+2x+1"), ("\\{1,2\\}", "\\{2,1\\}"), ("[1,2)", "(1,2]")]


def main(argv: list[str] | None = None) -> int:
    parse_timeout = int((sys.argv[1:] if argv is None else argv)[0])
    channel = os.dup(1)  # the protocol's own copy of stdout ...
    os.dup2(2, 1)  # ... so that stray prints (sympy, warnings) land on stderr and never corrupt a frame
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    for gold, pred in WARM_UP:
        judge(gold, pred, 60)  # a generous alarm: one firing mid-import could leave a module half-initialised
    try:
        write_all(channel, encode(READY))
        for line in sys.stdin.buffer:
            gold, pred = decode(line)
            write_all(channel, encode(list(judge(gold, pred, parse_timeout))))
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # the pool went away
    return 0


if __name__ == "__main__":
    sys.exit(main())
