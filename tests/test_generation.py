import pytest

from mathrecipe.evaluate.generation import Completion, SamplingSettings, _finish, answer_tokens, generate_hf
from mathrecipe.prompts import render_prompt


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_batched_generation_shapes_and_determinism(tiny):
    model, tok = tiny
    prompts = [render_prompt(tok, p) for p in ["Compute 12 + 13.", "Compute 40 - 11 + 20."]]
    s = SamplingSettings(n=3, temperature=1.0, max_new_tokens=12, seed=7)
    out = generate_hf(model, tok, prompts, s, batch_size=4)
    assert [len(x) for x in out] == [3, 3]
    for c in (c for cs in out for c in cs):
        assert 1 <= c.n_tokens <= 12 and isinstance(c.text, str)
        assert c.finished == (c.token_ids[-1] == tok.eos_token_id)
    again = generate_hf(model, tok, prompts, s, batch_size=4)
    assert [[c.token_ids for c in cs] for cs in out] == [[c.token_ids for c in cs] for cs in again]


def test_greedy_batched_equals_one_at_a_time(tiny):
    model, tok = tiny
    prompts = [render_prompt(tok, p) for p in ["Compute 12 + 13.", "Compute 40 - 11 + 20.", "Compute 99 - 50."]]
    s = SamplingSettings(n=1, temperature=0.0, max_new_tokens=10)
    batched = generate_hf(model, tok, prompts, s, batch_size=8)
    single = [generate_hf(model, tok, [p], s, batch_size=1)[0] for p in prompts]
    assert [b[0].token_ids for b in batched] == [x[0].token_ids for x in single]


def test_finish_cuts_at_stop_token(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = tok.encode("<think>\n\\boxed{5}\n</think>\nok", add_special_tokens=False)
    eos, think_end = tok.eos_token_id, tok.convert_tokens_to_ids("</think>")
    done = _finish(ids + [eos, tok.pad_token_id], [eos], [], tok)
    assert done.finished and done.token_ids == ids + [eos] and done.text == "<think>\n\\boxed{5}\n</think>\nok"
    cut = _finish(ids, [eos], [], tok)
    assert not cut.finished
    at_think = _finish(ids + [eos], [eos, think_end], [], tok)
    assert at_think.text.endswith("</think>") and at_think.finished


def test_answer_tokens_finds_where_the_answer_closes(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "<think>\n12 + 13 = 25\n\\boxed{25}\n</think>\nThe answer is 25."
    ids = tok.encode(text, add_special_tokens=False)
    c = Completion(text=text, token_ids=ids, finished=True)
    k = answer_tokens(c, text.index("\\boxed{25}") + len("\\boxed{25}"), tok)
    assert tok.decode(ids[:k]).endswith("\\boxed{25}")
    assert not tok.decode(ids[: k - 1]).endswith("\\boxed{25}")
    assert answer_tokens(c, None, tok) is None


def test_vllm_backend_without_vllm_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed")
    except ImportError:
        pass
    from mathrecipe.cli import main
    from mathrecipe.evaluate.generation import VLLMBackend

    with pytest.raises(RuntimeError, match="pip install 'mathrecipe\\[vllm\\]'"):
        VLLMBackend("x")
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"id": 1, "problem": "Compute 10 + 10.", "answer": "20"}\n')
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmarks", str(bench), "--out", str(tmp_path / "o"),
                 "--backend", "vllm"]) == 2
    assert "needs vLLM" in capsys.readouterr().err
