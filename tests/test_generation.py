import json
import sys
import types

import pytest

from mathrecipe.evaluate.generation import BackendMissing as VLLMMissing
from mathrecipe.evaluate.generation import (
    HFGenerator,
    SamplingSettings,
    SettingError,
    VLLMGenerator,
    _finish,
    make_generator,
)
from mathrecipe.evaluate.samples import answer_token_offsets
from mathrecipe.memory import auto_batch_size, kv_bytes_per_token, static_cache_bytes
from mathrecipe.prompts import batch_prompt_ids as prompt_ids
from mathrecipe.prompts import render_prompt

PROBLEMS = ["Compute 12 + 13.", "Compute 40 - 11 + 20.", "Compute 99 - 50."]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_batched_generation_shapes_and_determinism(tiny):
    model, tok = tiny
    ids = prompt_ids(tok, PROBLEMS[:2])
    s = SamplingSettings(samples=3, temperature=1.0, max_new_tokens=12, seed=7)
    gen = HFGenerator(model, tok, batch_size=4)
    seen = []
    out = gen.generate(ids, s, on_progress=seen.append)
    assert [len(x) for x in out] == [3, 3] and sum(seen) == 6
    for c in (c for cs in out for c in cs):
        assert 1 <= c.n_tokens <= 12 and isinstance(c.text, str)
        assert c.finished == (c.token_ids[-1] == tok.eos_token_id)
    again = gen.generate(ids, s)
    assert [[c.token_ids for c in cs] for cs in out] == [[c.token_ids for c in cs] for cs in again]


def test_generation_leaves_the_callers_random_stream_alone(tiny):
    import torch

    model, tok = tiny
    torch.manual_seed(1)
    HFGenerator(model, tok, batch_size=4).generate(prompt_ids(tok, PROBLEMS[:1]), SamplingSettings(max_new_tokens=4))
    after = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(3))  # training after an in-run evaluation draws what it would have drawn


def test_greedy_batched_equals_one_at_a_time(tiny):
    model, tok = tiny
    ids = prompt_ids(tok, PROBLEMS)
    s = SamplingSettings(samples=1, temperature=0.0, max_new_tokens=10)
    batched = HFGenerator(model, tok, batch_size=8).generate(ids, s)
    single = [HFGenerator(model, tok, batch_size=1).generate([p], s)[0] for p in ids]
    assert [b[0].token_ids for b in batched] == [x[0].token_ids for x in single]


def test_cpu_uses_a_static_cache_only_when_it_fits_the_kv_budget(tiny, monkeypatch):
    model, tok = tiny
    ids = prompt_ids(tok, PROBLEMS)
    s = SamplingSettings(samples=2, temperature=0.0, max_new_tokens=10)
    seen = []
    real = model.generate

    def recording(**kw):
        seen.append(kw.get("cache_implementation"))
        return real(**kw)

    monkeypatch.setattr(model, "generate", recording)
    fits = HFGenerator(model, tok, batch_size=8).generate(ids, s)
    width = max(map(len, ids))
    need = static_cache_bytes(model.config, 4, 6, width + 10)
    tight = HFGenerator(model, tok, batch_size=8, kv_cache_gib=0.5 * need / 2**30).generate(ids, s)
    assert seen == ["static", None]
    # the preallocated cache changes where the keys live, not what is generated
    assert [[c.token_ids for c in cs] for cs in fits] == [[c.token_ids for c in cs] for cs in tight]


def test_prompt_ids_are_the_rendered_prompt(tiny):
    _, tok = tiny
    ids = prompt_ids(tok, PROBLEMS[:1])
    assert tok.decode(ids[0]) == render_prompt(tok, PROBLEMS[0])


def test_prompt_ids_keep_the_single_bos_of_the_template(tiny_model_dir):
    # defect 9's condition: a template that writes BOS (DeepSeek-R1-Distill) and a tokenizer that adds one when
    # text is encoded with special tokens, which is what vLLM does to a text prompt
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"bos_token": "<bos>"})
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    text = render_prompt(tok, PROBLEMS[0])
    assert tok(text)["input_ids"][:2] == [bos, bos]  # text in, special tokens added: two BOS
    (ids,) = prompt_ids(tok, PROBLEMS[:1])
    assert ids[0] == bos and ids[1] != bos


def test_settings_are_checked():
    with pytest.raises(SettingError, match="samples must be >= 1, got 0"):
        SamplingSettings(samples=0)
    for kw, msg in [({"top_p": 0.0}, "top_p must be in"), ({"temperature": -1}, "temperature must be >= 0"),
                    ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"), ({"min_p": 1.5}, "min_p must be in")]:
        with pytest.raises(SettingError, match=msg):
            SamplingSettings(**kw)


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


def test_answer_token_offsets_find_where_each_box_closes(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "<think>\n12 + 13 = 25\n\\boxed{25}\n</think>\nThe answer is \\boxed{25}."
    ids = tok.encode(text, add_special_tokens=False)
    first = text.index("\\boxed{25}") + len("\\boxed{25}")
    ks = answer_token_offsets(ids, [first, len(text) - 1], tok)
    for k, end in zip(ks, [first, len(text) - 1]):
        assert len(tok.decode(ids[:k])) >= end > len(tok.decode(ids[: k - 1]))
    assert ks[0] < ks[1] <= len(ids)


def test_streamed_offsets_equal_bisection(tiny_tokenizer):
    tok = tiny_tokenizer

    class NoFastBackend:  # forces the bisection path
        decode = staticmethod(tok.decode)

    text = "é中 \\boxed{1} 文 x\\boxed{22}\n" * 5
    ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
    ends = [i + len("\\boxed{1}") for i in range(len(text)) if text.startswith("\\boxed{1}", i)] + [len(text)]
    assert answer_token_offsets(ids, ends, tok) == answer_token_offsets(ids, ends, NoFastBackend())
    assert answer_token_offsets(ids, [len(text) + 50], tok) == [len(ids)]  # past the text: the last token


def test_kv_formula_matches_the_real_cache_and_sizes_auto_batches(tiny):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    # grouped-query attention, head_dim given: the formula must use kv heads, not attention heads
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, num_hidden_layers=3, num_attention_heads=8,
                      num_key_value_heads=2, head_dim=16, intermediate_size=64)
    model = LlamaForCausalLM(cfg).eval()
    batch, length = 3, 11
    with torch.no_grad():
        cache = model(torch.ones(batch, length, dtype=torch.long), use_cache=True).past_key_values
    real = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    per_token = kv_bytes_per_token(cfg, 4)
    assert per_token == 2 * 3 * 2 * 16 * 4 and real == per_token * batch * length
    # auto batch: the largest batch whose cache fits the budget
    gib = per_token * 100 * 7.5 / 2**30  # room for 7.5 sequences of 100 tokens
    assert auto_batch_size(cfg, 4, 100, gib) == 7
    assert auto_batch_size(cfg, 4, 100, 1e-9) == 1
    m, tok = tiny
    ids = prompt_ids(tok, PROBLEMS)
    s = SamplingSettings(max_new_tokens=50)
    gib = 2.5 * kv_bytes_per_token(m.config, 4) * (max(map(len, ids)) + 50) / 2**30  # room for 2.5 sequences
    assert HFGenerator(m, tok, batch_size="auto", kv_cache_gib=gib).batch_size_for(ids, s) == 2
    roomy = HFGenerator(m, tok, batch_size="auto", kv_cache_gib=4)
    assert roomy.batch_size_for(ids, SamplingSettings(samples=2)) == 6  # never more than the sequences asked for
    with pytest.raises(SettingError, match="batch_size must be an integer >= 1 or 'auto'"):
        HFGenerator(m, tok, batch_size=0)


def test_vllm_missing_is_a_clear_error(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    with pytest.raises(VLLMMissing, match="pip install 'mathrecipe\\[vllm\\]'"):
        make_generator("vllm", str(tiny_model_dir), None)
    from mathrecipe.cli import main

    bench = tmp_path / "b.jsonl"
    bench.write_text('{"id": 1, "problem": "Compute 10 + 10.", "answer": "20"}\n')
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmarks", str(bench), "--out", str(tmp_path / "o"),
                 "--backend", "vllm"]) == 2
    err = capsys.readouterr().err
    assert "needs vLLM" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


class FakeVLLM:
    """A stand-in for the vllm package that records what it is given and answers every prompt with a box."""

    def __init__(self, tokenizer, answer="20"):
        self.calls, self.params, self.engines = [], [], []
        fake, calls, params, engines = self, self.calls, self.params, self.engines

        class SamplingParams:
            def __init__(self, **kw):
                self.__dict__.update(kw)
                params.append(kw)

        class LLM:
            def __init__(self, **kw):
                engines.append(kw)

            def generate(self, prompts, sampling_params, use_tqdm=True):
                calls.append(prompts)
                text = f"<think>\nok\n</think>\n\\boxed{{{answer}}}"
                ids = tokenizer.encode(text, add_special_tokens=False)
                out = types.SimpleNamespace(text=text, token_ids=ids, finish_reason="stop")
                return [types.SimpleNamespace(outputs=[out] * sampling_params.n) for _ in prompts]

        def TokensPrompt(**kw):  # a TypedDict in vLLM: calling it makes a dict
            return dict(kw)

        self.module = types.ModuleType("vllm")
        self.module.LLM, self.module.SamplingParams = LLM, SamplingParams
        self.inputs = types.ModuleType("vllm.inputs")
        self.inputs.TokensPrompt = TokensPrompt
        self.module.inputs = self.inputs
        del fake

    def install(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "vllm", self.module)
        monkeypatch.setitem(sys.modules, "vllm.inputs", self.inputs)
        return self


def test_vllm_gets_token_ids_not_text(tiny, monkeypatch):
    _, tok = tiny
    fake = FakeVLLM(tok).install(monkeypatch)
    ids = prompt_ids(tok, PROBLEMS[:2])
    gen = VLLMGenerator("some/model", seed=3)
    out = gen.generate(ids, SamplingSettings(samples=2, temperature=0.6, top_p=0.95, max_new_tokens=30,
                                             stop_at_think=True))
    assert fake.calls == [[{"prompt_token_ids": ids[0]}, {"prompt_token_ids": ids[1]}]]
    assert fake.params[0]["n"] == 2 and fake.params[0]["stop"] == ["</think>"] and fake.params[0]["max_tokens"] == 30
    assert [len(x) for x in out] == [2, 2] and out[0][0].finished and out[0][0].text.endswith("\\boxed{20}")


def test_eval_cli_vllm_backend_sends_the_hf_prompt_ids(tiny_model_dir, tiny_tokenizer, tmp_path, monkeypatch):
    from mathrecipe.cli import main

    fake = FakeVLLM(tiny_tokenizer).install(monkeypatch)
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"id": 1, "problem": "Compute 10 + 10.", "answer": "20"}\n'
                     '{"id": 2, "problem": "Compute 30 - 10.", "answer": "20"}\n')
    assert main(["-q", "eval", "--model", str(tiny_model_dir), "--benchmarks", str(bench), "--out",
                 str(tmp_path / "o"), "--backend", "vllm", "--samples", "2", "--max-new-tokens", "40"]) == 0
    sent = [p["prompt_token_ids"] for call in fake.calls for p in call]
    assert sent == prompt_ids(tiny_tokenizer, ["Compute 10 + 10.", "Compute 30 - 10."])
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["config"]["backend"] == "vllm" and summary["benchmarks"]["b"]["accuracy"] == 1.0


def test_a_backend_is_one_registry_entry(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Issue 19: adding a generation backend is one entry in generation.BACKENDS (its constructor, availability
    and memory model); the recipe, ``eval --backend``, ``mathrecipe plan`` and the run's pre-flight read it."""
    from mathrecipe.cli import main
    from mathrecipe.evaluate import generation as gen_mod
    from mathrecipe.plan import check_fits
    from mathrecipe.recipe import RecipeError, load_recipe

    made = []

    def make(model_or_path, tokenizer, **kw):
        made.append(model_or_path)
        return gen_mod.BACKENDS["hf"].make(model_or_path, tokenizer, **kw)

    monkeypatch.setitem(gen_mod.BACKENDS, "echo", gen_mod.Backend("echo", "Echo", "a test engine", make,
                                                                  gpu_share=0.5))
    monkeypatch.setitem(gen_mod.BACKENDS, "absent", gen_mod.Backend(
        "absent", "Absent", "never installed", make, requires="mathrecipe_no_such_module", needs="absent-pkg"))
    with pytest.raises(RecipeError, match="eval.backend: must be one of 'hf', 'vllm', 'echo', 'absent'; got 'tgi'"):
        load_recipe(None, ["eval.backend=tgi"])
    ev = check_fits(load_recipe(None, ["eval.backend=echo"]), gpus=1, gpu_mem_gib=24).stage("eval")
    assert ev.setup.startswith("Echo (0.5 of the card)") and ev.items == [("Echo share (0.5 x card)", 12.0, "all")]
    assert main(["run", f"output_dir={tmp_path / 'run'}", "eval.backend=absent"]) == 2  # the run's pre-flight
    assert capsys.readouterr().err.strip() == ("mathrecipe: error: eval.backend=absent needs absent-pkg, or set "
                                               "eval.backend=hf")

    bench = tmp_path / "b.jsonl"
    bench.write_text('{"id": 1, "problem": "Compute 10 + 10.", "answer": "20"}\n')
    out = tmp_path / "o"
    assert main(["-q", "eval", "--model", str(tiny_model_dir), "--benchmarks", str(bench), "--out", str(out),
                 "--backend", "echo", "--samples", "1", "--max-new-tokens", "4"]) == 0
    assert made == [str(tiny_model_dir)] and json.loads((out / "summary.json").read_text())["config"]["backend"] == "echo"
    capsys.readouterr()
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmarks", str(bench), "--out", str(tmp_path / "p"),
                 "--backend", "absent"]) == 2
    assert capsys.readouterr().err.strip() == ("mathrecipe: error: backend 'absent' needs absent-pkg, or use "
                                               "--backend hf")
