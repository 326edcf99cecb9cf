from mathrecipe.grading import extract_answer
from mathrecipe.rewards import boxed_before_think
from mathrecipe.toy import make_toy_data, teacher_trace


def test_task_is_seeded_and_test_set_held_out():
    a, b = make_toy_data(100, 30, 50, seed=3), make_toy_data(100, 30, 50, seed=3)
    assert a == b
    test = {r["problem"] for r in a.test}
    assert not test & {r["problem"] for r in a.sft}
    assert not test & {r["problem"] for r in a.rl}
    assert len(test) == 30


def test_every_number_is_two_digits_and_traces_are_right():
    s = make_toy_data(300, 10, 10, seed=0)
    for r in s.sft:
        nums = [int(t) for t in r["problem"].replace("Compute ", "").rstrip(".").split() if t.isdigit()]
        assert len(nums) == 3 and all(10 <= n <= 99 for n in nums)
        assert eval(r["problem"][8:-1]) == int(r["answer"])  # test-only check of the generator itself
        assert extract_answer(r["response"]) == r["answer"]
        assert boxed_before_think(r["response"])


def test_verbose_fraction():
    s = make_toy_data(1000, 10, 10, verbose_fraction=0.5, seed=0)
    verbose = sum("Wait, let me verify." in r["response"] for r in s.sft) / len(s.sft)
    assert 0.4 < verbose < 0.6
    assert all("Wait" not in r["response"] for r in make_toy_data(50, 5, 5, verbose_fraction=0.0).sft)


def test_trace_shape():
    s = make_toy_data(1, 1, 1, seed=0)
    from mathrecipe.toy import ToyProblem

    p = ToyProblem("Compute 91 - 39 + 41.", "93", ((91, "-", 39, 52), (52, "+", 41, 93)))
    assert teacher_trace(p) == "<think>\n91 - 39 = 52\n52 + 41 = 93\n\\boxed{93}\n</think>\nThe answer is \\boxed{93}."
    assert teacher_trace(p, 2).count("Wait, let me verify.") == 2
    assert s.sft[0]["response"].startswith("<think>")


def test_tokenizer_and_model_roundtrip_as_hf_folder(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert isinstance(model, LlamaForCausalLM)
    ids = tok.encode("Compute 91 - 39 + 41.", add_special_tokens=False)
    pieces = [tok.decode([i]) for i in ids]
    assert all(len(p.strip()) <= 1 for p in pieces if p.strip().isdigit())  # each digit its own token
    assert tok.decode(tok.encode("<think>\n\\boxed{93}\n</think>", add_special_tokens=False),
                      skip_special_tokens=True) == "<think>\n\\boxed{93}\n</think>"
    assert model.generation_config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.pad_token_id == tok.pad_token_id
