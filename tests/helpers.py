"""Shared test setup: the tiny toy model and the recipe overrides that make a run take seconds.

``TINY_MODEL`` is the one tiny Llama shape every test uses (a session model folder in conftest, override lists for
whole runs); :func:`tiny_run` gives the override list of a tiny toy run with a test's own split sizes.
"""

from __future__ import annotations

# The tiny Llama's shape: build_toy_model_folder's keywords, and the recipe's model.toy keys of the same values.
TINY_MODEL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
TINY_MODEL_OVERRIDES = [f"model.toy.{k}={v}" for k, v in TINY_MODEL.items()]


def tiny_run(n_sft: int, n_test: int, n_grpo: int, n_dev: int | None = 4, *extra: str) -> list[str]:
    """Overrides of a tiny toy run: the toy splits' sizes (``n_dev=None`` keeps the recipe's), the tiny model, then
    ``extra`` (a later override wins)."""
    sizes = [f"data.toy.n_sft={n_sft}", f"data.toy.n_test={n_test}", f"data.toy.n_grpo={n_grpo}"]
    if n_dev is not None:
        sizes.append(f"data.toy.n_dev={n_dev}")
    return [*sizes, *TINY_MODEL_OVERRIDES, *extra]
