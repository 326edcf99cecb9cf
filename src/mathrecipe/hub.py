"""Local path or hub id: decided up front, so a typo or an unreachable hub fails in seconds with one line.

Without this, a relative path that does not exist (``d/x.jsonl``, ``runs/x/finall``) is taken for a hub id by
``datasets`` / ``transformers``: 24-49 s of retries, then a ConnectionError traceback. Every loader (data sources,
benchmarks, models) calls ``resolve`` first.
"""

from __future__ import annotations

import difflib
import os
import socket
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from mathrecipe.errors import MathRecipeError

# Names ending like this are files or folders a user meant, never hub repositories.
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".arrow", ".txt", ".yaml", ".yml",
                  ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".zip", ".gz")
PROBE_TIMEOUT_S = 3.0
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_probes: dict[tuple[str, int], str | None] = {}  # (host, port) -> None if reachable, else why not (per process)


def looks_local(name: str) -> bool:
    """True when ``name`` can only be a path: it starts with ``.``, ``/`` or ``~``, holds a backslash or more than
    one ``/``, ends in a data/model file extension (``LOCAL_SUFFIXES``), or is not a valid hub repo id.
    Hub ids are ``owner/name`` (or a bare legacy ``name``)."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return True
    if name.lower().endswith(LOCAL_SUFFIXES):
        return True
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def _offline_var() -> str | None:
    """The environment variable that puts the HF libraries offline, if one is set."""
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return var
    return None


def in_local_cache(repo_id: str) -> bool:
    """True when the HF caches already hold ``repo_id``: a model or dataset snapshot in the hub cache, or a dataset
    prepared by ``datasets`` (what its offline mode reloads)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    hub_cache = Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)
    for repo_type in ("model", "dataset"):
        snapshots = hub_cache / repo_folder_name(repo_id=repo_id, repo_type=repo_type) / "snapshots"
        if snapshots.is_dir() and any(p.is_dir() and any(p.iterdir()) for p in snapshots.iterdir()):
            return True
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
    if not datasets_cache.is_dir():
        return False
    # datasets keeps "owner/Name" under "owner___name" (snake-cased name); compare case-insensitively, ignoring "_"
    key = repo_id.replace("/", "___").lower().replace("_", "")
    return any(p.is_dir() and p.name.lower().replace("_", "") == key and any(p.glob("*/*/*"))
               for p in datasets_cache.iterdir())


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _probe_target(endpoint: str) -> tuple[str, int]:
    """(host, port) a connection to the endpoint goes to first: its proxy when one is set for it (HTTPS_PROXY ...)."""
    url = urlsplit(endpoint)
    host = url.hostname or ""
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass_environment(host):
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or "", p.port or (443 if p.scheme == "https" else 80)
    return host, url.port or (443 if url.scheme == "https" else 80)


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the HF endpoint (``HF_ENDPOINT``, or its proxy) opens within ``timeout``
    seconds, else why not. One probe per target per process. Name resolution counts in the timeout: the
    connection is tried in a daemon thread that is abandoned when it is late."""
    target = _probe_target(_endpoint())
    if target in _probes:
        return _probes[target]
    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection(target, timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(str(e.strerror or e or type(e).__name__))

    t = threading.Thread(target=connect, daemon=True, name="mathrecipe-hub-probe")
    t.start()
    t.join(timeout)
    why = result[0] if result else f"no answer within {timeout:g} s"
    if why is not None:
        why = f"{target[0]}:{target[1]}: {why}"
    _probes[target] = why
    return why


def require_hub(name: str, what: str, local_hint: str) -> None:
    """Return at once when hub id ``name`` is in the local HF cache or the hub answers; otherwise raise one line
    naming the id, what it was for, why the hub cannot be used (offline variable, or the probe's failure) and
    ``local_hint`` (the local alternative)."""
    if in_local_cache(name):
        return
    var = _offline_var()
    if var:
        why = f"{var} is set and it is not in the local HF cache"
    else:
        why = hub_unreachable()
        if why is None:
            return
        why = f"the hub ({_endpoint()}) cannot be reached ({why}) and it is not in the local HF cache"
    raise MathRecipeError(f"{what}: {name!r} is a hub id, but {why}. {local_hint}")


def resolve(name: str | Path, what: str, local_hint: str) -> Path | str:
    """An existing local path as a ``Path``; a hub id (after ``require_hub``) as the id string.

    A name that looks local (``looks_local``) but does not exist raises "no such file or folder" at once, naming
    ``what`` and the closest existing name; it is never sent to the hub.
    """
    text = str(name)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if isinstance(name, Path) or looks_local(text):
        raise MathRecipeError(f"{what}: {text}: no such file or folder{_nearest(path)}. {local_hint}")
    require_hub(text, what, local_hint)
    return text


def _nearest(path: Path) -> str:
    """' (did you mean ...?)' for a near-miss in the deepest existing folder, or which folder does not exist."""
    parent = Path(path.anchor) if path.is_absolute() else Path()
    for part in path.parts[bool(path.anchor) : -1]:
        if not (parent / part).is_dir():
            return f" ({parent / part} {'is not a folder' if (parent / part).exists() else 'does not exist'})"
        parent = parent / part
    try:
        names = [p.name for p in parent.iterdir()]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.75)
    return f" (did you mean {parent / close[0]}?)" if close else ""
