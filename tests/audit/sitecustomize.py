"""Loaded at interpreter start by the 2-process test (PYTHONPATH): logs every file a rank opens for writing
under MATHRECIPE_AUDIT_DIR, to MATHRECIPE_AUDIT_LOG.<rank>. (torch.save and safetensors write from C++/Rust and are
not seen; everything written from Python is.)"""

import os
import sys

_OUT = os.environ.get("MATHRECIPE_AUDIT_DIR")
_LOG = os.environ.get("MATHRECIPE_AUDIT_LOG")


def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
    elif event in ("os.rename", "os.replace"):
        path, writing = args[1], True
    else:
        return
    path = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else None
    if writing and path and os.path.abspath(path).startswith(_OUT):
        with open(f"{_LOG}.{os.environ.get('RANK', '0')}", "a") as f:
            f.write(os.path.relpath(os.path.abspath(path), _OUT) + "\n")


if _OUT and _LOG:
    sys.addaudithook(_hook)
