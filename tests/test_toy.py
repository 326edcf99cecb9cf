import random

import pytest

from mathrecipe.grading import extract_answer
from mathrecipe.rewards import boxed_before_think
from mathrecipe.toy import make_toy_data, teacher_trace


def test_task_is_seeded_and_test_set_held_out():
    a, b = make_toy_data(100, 30, 50, seed=3), make_toy_data(100, 30, 50, seed=3)
    assert a == b
    test = {r["problem"] for r in a.test}
    assert not test & {r["problem"] for r in a.sft}
    assert not test & {r["problem"] for r in a.grpo}
    assert len(test) == 30


def test_every_number_is_two_digits_and_traces_are_right():
    s = make_toy_data(300, 10, 10, seed=0)
    for r in s.sft:
        nums = [int(t) for t in r["problem"].replace("Compute ", "").rstrip(".").split() if t.isdigit()]
        assert len(nums) == 3 and all(10 <= n <= 99 for n in nums)
        assert eval(r["problem"][8:-1]) == int(r["answer"])  # test-only check of the generator itself
        assert extract_answer(r["response"]) == r["answer"]
        assert boxed_before_think(r["response"])


def _digitwise(a: int, op: str, b: int) -> bool:
    """No carry and no borrow in either digit."""
    pairs = [(a % 10, b % 10), (a // 10, b // 10)]
    return all(x + y <= 9 for x, y in pairs) if op == "+" else all(x >= y for x, y in pairs)


def test_steps_are_digitwise_unless_carries_are_asked_for():
    from mathrecipe.toy import _sample_problem

    rng = random.Random(0)
    plain = [_sample_problem(rng) for _ in range(2000)]
    assert all(_digitwise(a, op, b) and 10 <= r <= 99 for p in plain for a, op, b, r in p.steps)
    assert {op for p in plain for _, op, _, _ in p.steps} == {"+", "-"}
    with_carries = [_sample_problem(rng, carries=True) for _ in range(2000)]
    assert all(10 <= r <= 99 and 10 <= b <= 99 for p in with_carries for _, _, b, r in p.steps)
    share = sum(not _digitwise(a, op, b) for p in with_carries for a, op, b, _ in p.steps) / 4000
    assert share > 0.3  # the first design: carries and borrows everywhere


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


# ------------------------------------------------------------------ bench/toy_robustness.py (make bench-toy)


def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "toy_robustness.py"
    spec = importlib.util.spec_from_file_location("toy_robustness", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kernel_variant_is_one_step_down():
    b = _bench()
    assert b.kernel_variant("AVX512") == "avx2"
    assert b.kernel_variant("AVX2") == "default"
    assert b.kernel_variant("SVE256") == "default"
    assert b.kernel_variant("DEFAULT") is None


def test_plan_runs_seeds_kernel_variant_and_gpu():
    b = _bench()
    runs = b.plan_runs([0, 1, 2], "AVX2", cuda=False)
    assert [r["name"] for r in runs] == ["seed0", "seed1", "seed2", "seed0-kernels-default"]
    assert runs[-1]["env"] == {"ATEN_CPU_CAPABILITY": "default"} and runs[-1]["seed"] == 0
    assert all(r["env"] == {} for r in runs[:3])
    gpu = b.plan_runs([5], "AVX512", cuda=True)
    assert [(r["name"], r["device"]) for r in gpu] == [("seed5", "cpu"), ("seed5-kernels-avx2", "cpu"),
                                                       ("seed5-gpu", "cuda")]
    assert [r["name"] for r in b.plan_runs([0], "DEFAULT", cuda=False)] == ["seed0"]


def test_kernel_check_finds_the_first_differing_loss():
    b = _bench()
    same = b.kernel_check({10: 2.5, 20: 1.25}, {10: 2.5, 20: 1.25})
    assert same["compared"] and not same["changed"]
    diff = b.kernel_check({10: 2.5, 20: 1.25, 30: 1.0}, {10: 2.5, 20: 1.2500001, 30: 0.9})
    assert diff["changed"] and diff["step"] == 20 and diff["loss_variant"] == 1.2500001
    assert b.kernel_check({10: 2.5}, {})["compared"] is False


def _report(accs, start, after):
    return {"sft": {"epochs": [{"epoch": i + 1, "accuracy": a, "mean_tokens": 66.0} for i, a in enumerate(accs)]},
            "start": {"name": "SFT epoch 3", "accuracy": start[0], "mean_tokens": start[1]},
            "grpo": {"steps": 100, "accuracy": after[0], "mean_tokens": after[1]}}


def test_summarize_report_uses_the_report_verdicts():
    b = _bench()
    good = b.summarize_report(_report([0.05, 0.4, 0.85], (0.85, 66.0), (0.84, 40.0)))
    assert good["sft_accuracy"] == [0.05, 0.4, 0.85]
    assert abs(good["grpo_token_ratio"] - 40 / 66) < 1e-12 and abs(good["grpo_accuracy_change"] + 0.01) < 1e-12
    assert good["reproduced"] and len(good["verdicts"]) == 2
    # lengthened by GRPO from a model that never learned: both effects fail, and the summary says so
    bad = b.summarize_report(_report([0.01, 0.03, 0.06], (0.06, 66.0), (0.06, 84.0)))
    assert not bad["reproduced"] and [v["reproduced"] for v in bad["verdicts"]] == [False, False]
    s = b.summarize_runs([{"ok": True, **good}, {"ok": True, **bad}])
    assert not s["all_reproduced"] and s["min_last_accuracy"] == 0.06 and s["max_token_ratio"] == 84 / 66


@pytest.mark.slow
def test_robustness_script_quick_end_to_end(tmp_path):
    """--quick: the seed run and the kernel-variant run as subprocesses, then both result files."""
    import json

    import torch

    b = _bench()
    cap = torch.backends.cpu.get_cpu_capability()
    variant = b.kernel_variant(cap)
    rc = b.main(["--quick", "--seeds", "0", "--jobs", "2", "--out", str(tmp_path), "--runs-dir",
                 str(tmp_path / "runs")])
    assert rc == 0
    result = json.loads((tmp_path / "toy_robustness.json").read_text())
    runs = {r["name"]: r for r in result["runs"]}
    assert runs["seed0"]["ok"] and runs["seed0"]["kernels"] == cap
    for r in runs.values():
        assert len(r["sft_accuracy"]) == 2 and len(r["verdicts"]) == 2 and r["wall_s"] > 0
        assert r["grpo_token_ratio"] > 0 and (tmp_path / "runs" / r["name"] / "report.json").is_file()
    md = (tmp_path / "toy_robustness.md").read_text()
    if variant is not None:
        v = runs[f"seed0-kernels-{variant}"]
        assert v["ok"] and v["kernels"] == variant.upper()  # the subprocess really ran on the other kernels
        assert result["kernel_check"]["compared"]
    if not torch.cuda.is_available():
        assert "GPU: not run" in md and not any(r["device"] == "cuda" for r in runs.values())
    assert "| seed0 |" in md and "All runs reproduce both effects: NO" in md  # tiny settings learn nothing
