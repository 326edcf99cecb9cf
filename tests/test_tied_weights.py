"""Resuming a model with tied embeddings says nothing about its tied copy, and still warns about a real loss."""

import logging
from types import SimpleNamespace

from safetensors.torch import load_file
from transformers import Trainer

from mathrecipe.modeling import declare_tied_weights, load_model_and_tokenizer
from mathrecipe.recipe import ModelConfig


def _resume_warnings(model, state, caplog):
    """What transformers' Trainer logs when resuming ``model`` from ``state`` (Trainer._load_from_checkpoint:
    load_state_dict(strict=False), then _issue_warnings_after_load)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="transformers.trainer"):
        Trainer._issue_warnings_after_load(SimpleNamespace(model=model), model.load_state_dict(state, False))
    return [r.getMessage() for r in caplog.records if "keys in the checkpoint" in r.getMessage()]


def test_a_tied_lm_head_missing_from_a_checkpoint_is_not_reported(tiny_model_dir, caplog):
    # 22.8: every resume of the toy printed "There were missing keys in the checkpoint model loaded: ['lm_head.weight']"
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), ModelConfig(), training=True)
    state = load_file(tiny_model_dir / "model.safetensors")  # what a checkpoint holds: the tied copy is not saved
    assert "lm_head.weight" not in state and model.config.tie_word_embeddings
    assert _resume_warnings(model, state, caplog) == []
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied after the load

    # a key missing for another reason is still reported (with the tied one: the set differs, nothing is hidden)
    partial = {k: v for k, v in state.items() if k != "model.norm.weight"}
    (warning,) = _resume_warnings(model, partial, caplog)
    assert "model.norm.weight" in warning


def test_weights_that_were_untied_are_not_declared(tiny_model_dir):
    import torch

    model, _ = load_model_and_tokenizer(str(tiny_model_dir), ModelConfig(), training=True)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untied by hand
    model._keys_to_ignore_on_save = None
    assert declare_tied_weights(model) == set() and not model._keys_to_ignore_on_save
