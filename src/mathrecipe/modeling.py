"""Loading a model folder or hub id the same way in every stage."""

from __future__ import annotations

from typing import Any

from mathrecipe.recipe import ModelConfig


def load_model_and_tokenizer(path: str, cfg: ModelConfig) -> tuple[Any, Any]:
    """(model, tokenizer) from an HF folder or hub id, with the recipe's attention and remote-code settings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code
    )
    return model, tokenizer
