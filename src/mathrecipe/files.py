"""Files written so that a kill at any moment never leaves a half-written one behind."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 minus the process's umask (0o644 under the usual 022).

    ``tempfile.mkstemp`` creates its file 0o600 whatever the umask, so a file renamed into place from it would be
    unreadable to the other users who can read its neighbours (a report on a shared machine)."""
    try:  # Linux: read the umask without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Re-raise an OSError raised while writing ``path`` with ``path`` as its filename: a disk that fills up during
    ``f.write`` raises ENOSPC without any filename, and the CLI's one-line error names the file it could not write."""
    try:
        yield
    except OSError as e:
        if e.errno is None or e.filename == str(path):
            raise
        raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, flush it to disk, then rename it over ``path``: a
    reader never sees a half-written file, and a failed or killed write leaves the old one. The file gets the mode
    a plain ``open()`` would give it (:func:`default_file_mode`); an OSError names ``path``."""
    p = Path(path)
    with naming(p):
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, default_file_mode())
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
    return p


def atomic_write_text(path: str | Path, text: str | bytes) -> Path:
    """``text`` (UTF-8) or bytes, written atomically."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place. The old one, if any, is moved aside first (a folder cannot replace a
    non-empty folder in one step), so ``final`` is always either the old whole folder or the new one."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def read_jsonl_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file written line by line; a last line cut off by a kill is ignored (and logged)."""
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s, line %d: cut off (an interrupted write); ignored", p, i)
    return rows
