import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Real benchmark files live beside the checkout (never copied into the repo).
SHARED_DATA = Path(os.environ.get("MATHRECIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "benchmarks").is_dir():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA} (set MATHRECIPE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def toy_splits():
    from mathrecipe.toy import make_toy_data

    return make_toy_data(n_sft=200, n_test=20, n_rl=100, seed=1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, toy_splits) -> Path:
    """An untrained tiny Llama + toy tokenizer saved as a standard HF folder."""
    from mathrecipe.toy import build_toy_model_folder

    out = tmp_path_factory.mktemp("tiny-model")
    return build_toy_model_folder(out, toy_splits, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)
