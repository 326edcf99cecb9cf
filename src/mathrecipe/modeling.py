"""Loading a model folder or hub id the same way in every stage, and refusing half-written folders up front.

Trainable weights are always loaded in fp32. transformers 5 loads ``dtype="auto"`` (bf16 for every real checkpoint),
and TRL's ``bf16=True`` only adds autocast, so a bf16 checkpoint would otherwise train in pure bf16, where an update
smaller than half a bf16 step vanishes (0.02 - 1e-5 == 0.02 in bf16; the paper's learning rates are 1e-5 and 4e-6).
With fp32 master weights the optimizer's updates accumulate and bf16 is used for compute only (autocast, or the
DeepSpeed/FSDP mixed-precision settings when one of them owns precision).

A GGUF file (llama.cpp's format), or a folder holding one and no ``config.json``, is converted once to a plain HF
folder in the cache (:func:`converted_gguf`) and that folder is used everywhere a model path is: transformers can
read a GGUF only dequantised and will not save or train such a model as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mathrecipe.errors import MathRecipeError
from mathrecipe.schema import ModelConfig

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class ModelError(MathRecipeError):
    """A model folder that cannot be loaded; the message names the folder and what is missing."""


def missing_files(path: str | Path) -> list[str]:
    """What a local model folder lacks to load: config, weights (every shard an index names, none empty), tokenizer."""
    p = Path(path)
    missing: list[str] = []
    if not (p / "config.json").is_file() or (p / "config.json").stat().st_size == 0:
        missing.append("config.json")
    weights = [f for f in WEIGHT_FILES if (p / f).is_file() and (p / f).stat().st_size > 0]
    if not weights:
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    for index in (f for f in weights if f.endswith(".index.json")):
        try:
            shards = set(json.loads((p / index).read_text())["weight_map"].values())
        except (json.JSONDecodeError, KeyError, OSError):
            missing.append(f"a readable {index}")
            continue
        missing += sorted(s for s in shards if not (p / s).is_file() or (p / s).stat().st_size == 0)
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json / tokenizer_config.json)")
    return missing


def check_model_folder(path: str | Path, what: str = "model") -> None:
    """Raise one line naming the missing files when ``path`` is a folder that cannot be loaded as a model."""
    p = Path(path)
    if p.is_file():
        raise ModelError(f"{what} {p}: a file, not a model folder (give the folder that holds config.json)")
    if not p.is_dir():
        raise ModelError(f"{what} {p}: no such folder")
    missing = missing_files(p)
    if missing:
        raise ModelError(f"{what} {p} is incomplete (a save that was interrupted?): missing {', '.join(missing)}")


# ------------------------------------------------------------------------------------------------- GGUF

GGUF_MANIFEST = "mathrecipe_gguf.json"  # written last into a converted folder: source and weights hashes
_hashes: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def cache_root() -> Path:
    """Where converted models are kept: ``$MATHRECIPE_CACHE``, else ``$XDG_CACHE_HOME/mathrecipe``, else
    ``~/.cache/mathrecipe``."""
    if os.environ.get("MATHRECIPE_CACHE"):
        return Path(os.environ["MATHRECIPE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mathrecipe"


def sha256_file(path: str | Path) -> str:
    """The file's sha256 (hex), computed once per process for an unchanged file (same size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _hashes[key] = h.hexdigest()
    return _hashes[key]


def find_gguf(path: str | Path) -> Path | None:
    """The GGUF file a model path means: the path itself when it is a ``.gguf`` file, or the one ``.gguf`` in a
    folder that has no ``config.json`` (a folder with several names them); None for anything else."""
    p = Path(path)
    if p.is_file():
        return p if p.suffix.lower() == ".gguf" else None
    if not p.is_dir() or (p / "config.json").is_file():
        return None
    found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".gguf")
    if len(found) > 1:
        raise ModelError(f"model {p} holds {len(found)} GGUF files ({', '.join(f.name for f in found[:4])}): give "
                         "the one to use as the model path")
    return found[0] if found else None


def _require_gguf_package(gguf: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"model {gguf} is a GGUF file; converting it to an HF folder needs the gguf package: "
                         "pip install 'mathrecipe[gguf]' (or pip install gguf), then rerun")


def converted_problem(folder: Path, source_sha256: str | None = None) -> str | None:
    """Why a converted folder cannot be reused (None: it can): no manifest, another source file, missing files, or
    weights whose sha256 differs from the one recorded at conversion (a cut or altered copy)."""
    manifest = folder / GGUF_MANIFEST
    if not manifest.is_file():
        return "not converted yet"
    try:
        m = json.loads(manifest.read_text())
        weights = folder / m["weights_file"]
    except (json.JSONDecodeError, KeyError, OSError):
        return f"unreadable {GGUF_MANIFEST}"
    if source_sha256 is not None and m.get("source_sha256") != source_sha256:
        return "converted from another GGUF file"
    missing = missing_files(folder)
    if missing:
        return f"missing {', '.join(missing)}"
    if sha256_file(weights) != m.get("weights_sha256"):
        return f"{weights.name} does not match the sha256 recorded at conversion"
    return None


def convert_gguf(gguf: str | Path, dest: str | Path, dtype: str = "bfloat16") -> Path:
    """Convert a GGUF file into a plain HF folder ``dest`` (weights in ``dtype``, tokenizer and chat template from
    the GGUF), written to a temporary folder and moved into place whole.

    transformers dequantises a GGUF on load, but ``save_pretrained`` refuses the loaded model ("quantized with gguf
    and is not serializable") and the trainers would see a quantized model. So a plain model of the same class is
    built from the config without its ``quantization_config`` and takes the state dict (every key must match).
    bf16 by default: what real checkpoints ship, half the disk of fp32, and the stages load fp32 masters anyway.
    """
    import copy

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathrecipe.files import atomic_write_json, replace_dir

    src, out = Path(gguf), Path(dest)
    _require_gguf_package(src)
    log.info("converting GGUF %s to an HF folder %s (once; reused afterwards)", src, out)
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    plain = type(loaded)(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # tied output embeddings are one tensor under two names: a plain model ties them again itself
    tied = set(getattr(plain, "_tied_weights_keys", None) or {}) if config.tie_word_embeddings else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ModelError(f"model {src}: the GGUF's tensors do not fit a plain {type(loaded).__name__} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}); convert it with llama.cpp's tools")
    plain.generation_config = loaded.generation_config
    plain.to(getattr(torch, dtype))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    weights = next(f for f in WEIGHT_FILES if (tmp / f).is_file())
    atomic_write_json(tmp / GGUF_MANIFEST, {
        "source": str(src.resolve()), "source_sha256": sha256_file(src), "dtype": dtype,
        "weights_file": weights, "weights_sha256": sha256_file(tmp / weights),
        "converted_by": f"transformers {transformers.__version__}",
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(tmp, out)
    return out


def converted_gguf(gguf: str | Path, dtype: str = "bfloat16", expect_sha256: str | None = None) -> Path:
    """The cached HF folder of a GGUF file, converting it on first use: ``cache_root()/gguf/<sha256[:16]>-<dtype>``.
    A cached folder is reused only when its manifest names this file's sha256 and its weights still hash to the
    recorded value; otherwise it is converted again. ``expect_sha256`` pins the source file (a fixture)."""
    src = Path(gguf)
    digest = sha256_file(src)
    if expect_sha256 is not None and digest != expect_sha256:
        raise ModelError(f"model {src}: sha256 {digest[:16]}... is not the expected {expect_sha256[:16]}... "
                         "(another version of the file?)")
    folder = cache_root() / "gguf" / f"{digest[:16]}-{dtype}"
    if converted_problem(folder, digest) is None:
        return folder
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):  # processes of one launch (or two commands) convert it once
        why = converted_problem(folder, digest)
        if why is None:
            return folder
        if why != "not converted yet":
            log.warning("cached conversion %s: %s; converting again", folder, why)
        return convert_gguf(src, folder, dtype)


def resolve_model(name: str, what: str = "model") -> str:
    """A local model folder (checked complete) or a hub id (checked reachable); a missing local-looking path fails
    at once and is never sent to the hub. A GGUF file (or a folder holding one and no config.json) resolves to its
    converted HF folder in the cache (converted on first use)."""
    from mathrecipe.hub import resolve

    found = resolve(name, what, "Give a local model folder (an HF checkpoint: config.json, weights, tokenizer), "
                    "a GGUF file or a reachable hub id.")
    if isinstance(found, Path):
        gguf = find_gguf(found)
        if gguf is not None:
            return str(converted_gguf(gguf))
        check_model_folder(found, what)
        return str(found)
    return found


def load_tokenizer(path: str, cfg: ModelConfig) -> Any:
    """The tokenizer of a model folder, hub id or GGUF file (see :func:`resolve_model`); a local-looking path that
    is missing (deleted since it was checked, say) fails in one line and is never sent to the hub."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(path), trust_remote_code=cfg.trust_remote_code)


def load_model(path: str, cfg: ModelConfig, training: bool = False, dtype: Any = None, device: Any = None) -> Any:
    """The one model loader: the causal LM of a model folder, hub id or GGUF file (:func:`resolve_model`) with the
    recipe's attention and remote-code settings, its tied weights declared (:func:`declare_tied_weights`).

    ``training=True`` loads fp32 master weights (see the module docstring); otherwise ``dtype`` (default: the
    checkpoint's own, ``"auto"``). Moved to ``device`` when one is given.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        resolve_model(path), attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code,
        dtype=torch.float32 if training else (dtype or "auto"),
    )
    declare_tied_weights(model)
    return model if device is None else model.to(device)


def load_model_and_tokenizer(path: str, cfg: ModelConfig, training: bool = False,
                             dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) from an HF folder or hub id: :func:`load_model` and :func:`load_tokenizer`."""
    path = resolve_model(path)
    tokenizer = load_tokenizer(path, cfg)
    return load_model(path, cfg, training=training, dtype=dtype), tokenizer


def load_for_generation(path: str, cfg: ModelConfig | None = None, device: Any = None) -> Any:
    """A saved causal LM for generation (:func:`load_model`): bf16 on CUDA (fp32 elsewhere), on ``device``
    (default: cuda if any)."""
    import torch

    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return load_model(path, cfg or ModelConfig(), dtype=dtype, device=device)


@contextmanager
def loading_errors(model: str, what: str = "--model") -> Iterator[None]:
    """What transformers and torch raise for a model they cannot read, as one line naming ``what``: a folder
    without weights or tokenizer files, an unknown hub id or architecture (OSError, ValueError), or weights torch
    refuses to unpickle."""
    try:
        yield
    except MathRecipeError:
        raise
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{what} {model}: cannot be loaded ({first})") from e
    except pickle.UnpicklingError as e:  # torch's weights_only load refused a pickle holding more than tensors
        raise ModelError(f"{what} {model}: its pickled weights (pytorch_model.bin) hold Python objects that torch "
                         "refuses to load, since unpickling them could run code; use a safetensors copy of the "
                         "model from a source you trust") from e


def open_tokenizer(model: str, what: str = "--model") -> tuple[Any, int | None]:
    """(tokenizer, context window in tokens or None) of a saved folder or hub id, without loading the weights: what
    the prompt-length check needs, in seconds. One that cannot be read is one line naming ``what``."""
    from transformers import AutoConfig

    from mathrecipe.prompts import model_context

    with loading_errors(model, what):
        return load_tokenizer(model, ModelConfig()), model_context(AutoConfig.from_pretrained(resolve_model(model)))


def declare_tied_weights(model: Any) -> set[str]:
    """Tell transformers' Trainer that tied weights are not in a checkpoint: returns (and sets as
    ``model._keys_to_ignore_on_save``) the keys of parameters that ARE their tie's source parameter.

    ``save_pretrained`` drops a tied copy (``lm_head.weight`` of a model with tied embeddings), so resuming from a
    checkpoint ``load_state_dict``s without it, and the Trainer logs "There were missing keys in the checkpoint model
    loaded: ['lm_head.weight']" unless the missing keys are exactly ``_keys_to_ignore_on_save`` (then it re-ties,
    silently). Only weights that share the very tensor are declared, so a key missing for any other reason -- or
    a "tied" key whose weights were untied -- is still warned about. Saving is unchanged: those keys were dropped
    as tied copies anyway."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    keys = set()
    for target, source in tied.items():
        try:
            same = model.get_parameter(target) is model.get_parameter(source)
        except AttributeError:  # a key of a submodule this model does not have
            same = False
        if same:
            keys.add(target)
    if keys:
        model._keys_to_ignore_on_save = set(model._keys_to_ignore_on_save or ()) | keys
    return keys


def train_dtypes(precision: str, cuda: bool | None = None, sharded: bool = False) -> dict[str, str]:
    """The dtypes a stage trains in: fp32 master weights always; compute bf16/fp16 when asked (or "auto" on a GPU
    with bf16), else fp32. ``sharded``: a DeepSpeed/FSDP config owns mixed precision (its own fp32 master copy)."""
    import torch

    if cuda is None:
        cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    compute = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[precision]
    return {"params": "float32", "compute": compute, "mixed_precision_by": "deepspeed/fsdp" if sharded else
            ("autocast" if compute != "float32" else "none")}
