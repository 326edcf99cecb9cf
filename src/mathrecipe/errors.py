"""User-facing errors: the CLI prints these as one clear line (exit 2) instead of a traceback."""

from __future__ import annotations

import errno
import pickle


class MathRecipeError(ValueError):
    """Bad input from the user (recipe, data, arguments); the message names the culprit and the fix."""


# What the machine, not the program, got wrong: each errno, what it means, and what to do.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: ("no space left on device", "free some space (or write somewhere else), then rerun the same command"),
    errno.EDQUOT: ("disk quota exceeded", "free some space (or write somewhere else), then rerun the same command"),
    errno.EROFS: ("read-only file system", "write somewhere else"),
    errno.EACCES: ("permission denied", "check the permissions, or use another path"),
    errno.EPERM: ("operation not permitted", "check the permissions, or use another path"),
}
# How libraries that do not raise OSError report a full disk: safetensors (Rust io::Error text) and torch.save's
# zip writer ("unexpected pos" / "file write failed" when a write comes back short).
_DISK_FULL_TEXT = ("No space left on device", "os error 28", "StorageFull")
_TORCH_WRITER_TEXT = ("PytorchStreamWriter failed writing file", "unexpected pos")


def _chain(e: BaseException) -> list[BaseException]:
    out, seen = [], set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        out.append(x)
        x = x.__cause__ or x.__context__
    return out


def environment_message(e: BaseException) -> str | None:
    """One line for a failure of the machine rather than of the program -- a full disk, a read-only or forbidden
    path (an OSError with that errno anywhere in ``e``'s chain, named by its file), a checkpoint write cut short, a
    weights file that torch refuses to unpickle -- or None: anything else is a bug and keeps its traceback."""
    for x in _chain(e):
        if isinstance(x, OSError) and x.errno in ENVIRONMENT_ERRNOS:
            what, fix = ENVIRONMENT_ERRNOS[x.errno]
            where = f"{x.filename}: " if x.filename else ""
            return f"{where}{what}; {fix}"
    for x in _chain(e):
        text = str(x)
        first = (text.strip().splitlines() or [type(x).__name__])[0][:200]
        if any(t in text for t in _DISK_FULL_TEXT):
            return f"writing failed: no space left on device ({first}); " + ENVIRONMENT_ERRNOS[errno.ENOSPC][1]
        if isinstance(x, RuntimeError) and any(t in text for t in _TORCH_WRITER_TEXT):
            return (f"saving with torch failed ({first}): a write came back short, which almost always means the disk "
                    f"is full; {ENVIRONMENT_ERRNOS[errno.ENOSPC][1]}")
        if isinstance(x, pickle.UnpicklingError):
            return ("a model file holds pickled Python objects that torch refuses to load (unpickling them could run "
                    "code); use a safetensors copy of the model from a source you trust")
    return None
