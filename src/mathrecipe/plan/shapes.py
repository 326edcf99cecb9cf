"""Model shapes for ``mathrecipe plan``: where a config is at hand (a local folder, a converted GGUF file, a hub id in
the local HF cache) the shape is read from it and the parameters are counted exactly on the meta device; hub ids of
the paper's models have a built-in table (no download); the toy's shape comes from ``model.toy``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathrecipe.memory import ModelShape
from mathrecipe.recipe import Recipe, RecipeError


def _qwen25(name: str, layers: int, hidden: int, heads: int, kv: int, inter: int, vocab: int, tied: bool,
            max_pos: int = 131072) -> ModelShape:
    return ModelShape(name, layers, hidden, heads, kv, hidden // heads, inter, vocab, tied, attention_bias=True,
                      max_positions=max_pos)


# The paper's models, from their config.json (no download needed). OpenMath-Nemotron-14B and Fast-Math-R1-14B have
# the Qwen2.5-14B shape of DeepSeek-R1-Distill-Qwen-14B.
BUILTIN_SHAPES: dict[str, ModelShape] = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": _qwen25("DeepSeek-R1-Distill-Qwen-1.5B", 28, 1536, 12, 2, 8960,
                                                         151936, False),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": _qwen25("DeepSeek-R1-Distill-Qwen-7B", 28, 3584, 28, 4, 18944,
                                                       152064, False),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": _qwen25("DeepSeek-R1-Distill-Qwen-14B", 48, 5120, 40, 8, 13824,
                                                        152064, False),
    "nvidia/OpenMath-Nemotron-14B": _qwen25("OpenMath-Nemotron-14B", 48, 5120, 40, 8, 13824, 152064, False),
    "RabotniKuma/Fast-Math-R1-14B": _qwen25("Fast-Math-R1-14B", 48, 5120, 40, 8, 13824, 152064, False),
    "Qwen/Qwen3-14B": ModelShape("Qwen3-14B", 40, 5120, 40, 8, 128, 17408, 151936, False, qk_norm=True,
                                 max_positions=40960),
    # the GPU probe's shape (bench/gpu_probe.py)
    "Qwen/Qwen2.5-1.5B": _qwen25("Qwen2.5-1.5B", 28, 1536, 12, 2, 8960, 151936, True, 32768),
}


def shape_from_config(cfg: dict[str, Any], name: str) -> ModelShape:
    """A ModelShape from an HF config.json dict (a nested text_config is used when present), its parameters
    counted exactly where transformers can build the model (:func:`count_params`)."""
    c = cfg.get("text_config") or cfg
    if any(k in c for k in ("num_experts", "num_local_experts", "n_routed_experts")):
        raise RecipeError(f"model.name_or_path={name}: a mixture-of-experts model; mathrecipe plan models dense "
                          "decoders only")
    try:
        h, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
        model_type = str(c.get("model_type", cfg.get("model_type", "")))
        return ModelShape(
            name=name, layers=int(c["num_hidden_layers"]), hidden=h, heads=heads,
            kv_heads=int(c.get("num_key_value_heads") or heads), head_dim=int(c.get("head_dim") or h // heads),
            intermediate=int(c["intermediate_size"]), vocab=int(c["vocab_size"]),
            tied=bool(c.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
            attention_bias=bool(c.get("attention_bias", model_type == "qwen2")),
            qk_norm=model_type.startswith("qwen3"), max_positions=c.get("max_position_embeddings"),
            counted_params=count_params(cfg),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RecipeError(f"model.name_or_path={name}: config.json lacks {e}; mathrecipe plan needs hidden_size, "
                          "num_hidden_layers, num_attention_heads, intermediate_size and vocab_size") from e


def count_params(cfg: dict[str, Any]) -> int | None:
    """The exact parameter count of the model a config.json describes, tied weights counted once: the model is
    built from ``AutoConfig`` on the meta device (``accelerate.init_empty_weights``: no memory, no download) and
    tied again after that context (inside it accelerate registers every parameter anew, which undoes a tie made
    while building). None where transformers cannot build it (no or an unknown model_type, remote code): the
    shape's formula counts then."""
    try:
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.for_model(**cfg)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config)
        model.tie_weights()
    except (ImportError, AttributeError, KeyError, TypeError, ValueError, OSError):
        return None
    return sum(p.numel() for p in model.parameters())


def _cached_config(repo_id: str) -> str | None:
    """config.json of a hub id already in the local HF cache (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a valid repo id, no cache: then it is simply not cached
        return None
    return found if isinstance(found, str) else None


def resolve_shape(recipe: Recipe) -> ModelShape:
    """The model's shape: the toy from model.toy, a local folder's config.json, a built-in paper model, or a hub
    id found in the local HF cache."""
    m = recipe.model
    name = m.name_or_path
    if name == "toy":
        t = m.toy
        # the toy tokenizer adds <think>, </think> and \boxed{ to its trained vocabulary
        return ModelShape("toy", t.num_layers, t.hidden_size, t.num_heads, t.num_heads, t.hidden_size // t.num_heads,
                          t.intermediate_size, t.vocab_size + 3, True, max_positions=1024)
    from mathrecipe.modeling import converted_gguf, find_gguf

    gguf = find_gguf(name)  # a GGUF file: the config of its converted folder (converted once, cached)
    local = (converted_gguf(gguf) if gguf else Path(name)) / "config.json"
    if local.is_file():
        return shape_from_config(json.loads(local.read_text()), name)
    lower = {k.lower(): v for k, v in BUILTIN_SHAPES.items()}
    by_base = {k.split("/")[-1].lower(): v for k, v in BUILTIN_SHAPES.items()}
    hit = lower.get(name.lower()) or by_base.get(name.lower())
    if hit is not None:
        return hit
    cached = _cached_config(name)
    if cached:
        return shape_from_config(json.loads(Path(cached).read_text()), name)
    known = ", ".join(sorted(BUILTIN_SHAPES))
    raise RecipeError(f"model.name_or_path={name}: no config.json there and not a built-in shape; point it at a "
                      f"model folder, or use one of: {known}")
