import os
from pathlib import Path

import pytest
from helpers import TINY_MODEL

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

    return make_toy_data(n_sft=200, n_test=20, n_grpo=100, seed=1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, toy_splits) -> Path:
    """An untrained tiny Llama + toy tokenizer saved as a standard HF folder."""
    from mathrecipe.toy import build_toy_model_folder

    out = tmp_path_factory.mktemp("tiny-model")
    return build_toy_model_folder(out, toy_splits, **TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


# Real chat templates (TRL ships the originals) on tiny local tokenizers: no downloads.
TEMPLATES = {
    # name: (TRL template file, bos, eos, pad, extra special tokens, added non-special tokens)
    "deepseek_r1_distill": ("deepseek_r1_distill.jinja", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                            "<｜end▁of▁sentence｜>", ["<｜User｜>", "<｜Assistant｜>"], ["<think>", "</think>"]),
    "qwen2_5": ("qwen2_5.jinja", None, "<|im_end|>", "<|endoftext|>", ["<|im_start|>"], ["<think>", "</think>"]),
    "qwen3": ("qwen3.jinja", None, "<|im_end|>", "<|endoftext|>", ["<|im_start|>"], ["<think>", "</think>"]),
    "llama3": ("llama3.jinja", "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>",
               ["<|start_header_id|>", "<|end_header_id|>"], ["<think>", "</think>"]),
}


def make_template_tokenizer(name: str, corpus: list[str] | None = None):
    """A small byte-level BPE tokenizer carrying ``name``'s real chat template and special tokens. Like the real
    DeepSeek and Llama 3 tokenizers, it adds a BOS when asked for special tokens (the double-BOS trap)."""
    from pathlib import Path as _P

    import trl
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    file, bos, eos, pad, specials, added = TEMPLATES[name]
    template = (_P(trl.__file__).parent / "chat_templates" / file).read_text()
    all_special = [t for t in dict.fromkeys([bos, eos, pad, *specials]) if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = corpus or ["Please reason step by step, and put your final answer within \\boxed{}.",
                        "Compute 45 - 12 + 30. Wait, let me verify. The answer is", "system user assistant"]
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=all_special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   additional_special_tokens=specials)
    fast.add_tokens(added)
    fast.chat_template = template
    return fast


def make_template_model_dir(path, name: str, dtype: str = "float32"):
    """A tiny Llama with ``name``'s template tokenizer, saved as an HF folder in ``dtype``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = make_template_tokenizer(name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               bos_token_id=tok.bos_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
