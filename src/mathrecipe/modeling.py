"""Loading a model folder or hub id the same way in every stage, and refusing half-written folders up front.

Trainable weights are always loaded in fp32. transformers 5 loads ``dtype="auto"`` (bf16 for every real checkpoint),
and TRL's ``bf16=True`` only adds autocast, so a bf16 checkpoint would otherwise train in pure bf16, where an update
smaller than half a bf16 step vanishes (0.02 - 1e-5 == 0.02 in bf16; the paper's learning rates are 1e-5 and 4e-6).
With fp32 master weights the optimizer's updates accumulate and bf16 is used for compute only (autocast, or the
DeepSpeed/FSDP mixed-precision settings when one of them owns precision).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathrecipe.errors import MathRecipeError
from mathrecipe.recipe import ModelConfig

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


def resolve_model(name: str, what: str = "model") -> str:
    """A local model folder (checked complete) or a hub id (checked reachable); a missing local-looking path fails
    at once and is never sent to the hub."""
    from mathrecipe.hub import resolve

    found = resolve(name, what, "Give a local model folder (an HF checkpoint: config.json, weights, tokenizer) or a reachable hub id.")
    if isinstance(found, Path):
        check_model_folder(found, what)
        return str(found)
    return found


def load_tokenizer(path: str, cfg: ModelConfig) -> Any:
    """The tokenizer of a local folder or hub id; a local-looking path that is missing (deleted since it was
    checked, say) fails in one line and is never sent to the hub."""
    from transformers import AutoTokenizer

    from mathrecipe.hub import resolve

    found = resolve(path, "model", "Give a local model folder (an HF checkpoint) or a reachable hub id.")
    return AutoTokenizer.from_pretrained(str(found), trust_remote_code=cfg.trust_remote_code)


def load_model_and_tokenizer(path: str, cfg: ModelConfig, training: bool = False,
                             dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) from an HF folder or hub id, with the recipe's attention and remote-code settings.

    ``training=True`` loads fp32 master weights (see the module docstring); otherwise ``dtype`` (default: the
    checkpoint's own, ``"auto"``).
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(path)
    tokenizer = load_tokenizer(path, cfg)
    model = AutoModelForCausalLM.from_pretrained(
        path, attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code,
        dtype=torch.float32 if training else (dtype or "auto"),
    )
    declare_tied_weights(model)
    return model, tokenizer


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
