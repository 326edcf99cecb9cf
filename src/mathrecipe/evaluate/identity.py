"""Which model made an output folder's rows: a cheap identity of a model's files, for ``eval`` (and ``solve``) resume.

A folder's path says nothing about what is in it: another model copied to the same path would otherwise be resumed
into the same output, and its numbers mixed with the first model's. The identity is the size and modification
time of every file that decides what the model generates; it is read with ``stat`` only (no file is opened), so a
100 GB checkpoint costs microseconds, and any rewrite of one of those files (a copy, a re-save, a conversion)
changes it.
"""

from __future__ import annotations

from pathlib import Path

# Files beside the weights that do not change what the model generates: training state, bookkeeping, docs.
_IGNORED = frozenset({"trainer_state.json", "training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt",
                      "mathrecipe_complete.json", "mathrecipe_health.json", "README.md"})
# What does: config, generation config, weights of every format, tokenizer files, the chat template, remote code.
_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".gguf", ".model", ".txt", ".jinja", ".tiktoken", ".py")

_WEIGHTS = (".safetensors", ".bin", ".gguf", ".pt", ".pth")

Fingerprint = dict[str, list[int]]


def _folder(model: str | Path) -> Path | None:
    """The local folder of ``model``: itself, or a hub id's cached snapshot (None when not cached)."""
    p = Path(model)
    if p.is_dir():
        return p
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(str(model), "config.json")
    except Exception:  # not a valid repo id: no snapshot to describe
        return None
    return Path(found).parent if isinstance(found, str) else None


def model_fingerprint(model: str | Path) -> Fingerprint | None:
    """{file name: [size in bytes, modification time in ns]} of every top-level file of the model's folder that
    decides what it generates (config, generation config, weights, tokenizer, chat template, remote code; not
    optimizer or trainer state). ``model`` is a local folder or a hub id (its cached snapshot; files are followed
    through the cache's links). None when there is no local folder to describe (a hub id not downloaded yet)."""
    folder = _folder(model)
    if folder is None:
        return None
    out: Fingerprint = {}
    for f in sorted(folder.iterdir()):
        if f.name in _IGNORED or f.name.startswith((".", "rng_state")) or not f.name.endswith(_SUFFIXES):
            continue
        try:
            st = f.stat()
        except OSError:  # a dangling link: not part of the model
            continue
        if f.is_file():
            out[f.name] = [st.st_size, st.st_mtime_ns]
    return out


def fingerprint_changes(old: Fingerprint | None, new: Fingerprint | None) -> list[str]:
    """What differs between two fingerprints, as short phrases ("model.safetensors rewritten", "config.json
    removed"), weights first; empty when they agree or either is unknown."""
    if old is None or new is None:
        return []
    changes = [(name, "removed") for name in old if name not in new]
    changes += [(name, "added") for name in new if name not in old]
    changes += [(name, "rewritten") for name in old if name in new and list(old[name]) != list(new[name])]
    weights_first = sorted(changes, key=lambda c: (not c[0].endswith(_WEIGHTS), c[0] != "config.json", c[0]))
    return [f"{name} {what}" for name, what in weights_first]
