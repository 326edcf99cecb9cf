from types import SimpleNamespace

import pytest

from mathrecipe.prompts import (
    SYSTEM_PROMPT,
    build_messages,
    describe_overlong,
    model_context,
    overlong_prompts,
    render_prompt,
)


def test_default_system_prompt_is_the_papers():
    assert SYSTEM_PROMPT == "Please reason step by step, and put your final answer within \\boxed{}."
    msgs = build_messages("What is 1+1?")
    assert msgs == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "What is 1+1?"}]
    assert build_messages("x", system_prompt=None) == [{"role": "user", "content": "x"}]


def test_empty_problem_is_an_error():
    with pytest.raises(ValueError, match="non-empty"):
        build_messages("   ")


def test_render_uses_the_tokenizers_own_template(tiny_tokenizer):
    text = render_prompt(tiny_tokenizer, "Compute 12 + 13.")
    assert text == tiny_tokenizer.apply_chat_template(build_messages("Compute 12 + 13."), tokenize=False,
                                                      add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and SYSTEM_PROMPT in text


def test_tokenizer_without_template_is_a_clear_error(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        render_prompt(tok, "Compute 12 + 13.")


def test_prompt_identical_across_sft_grpo_and_eval(tiny_model_dir, tiny_tokenizer, tmp_path):
    """The ids SFT trains on (prompt part), GRPO samples from, and evaluation generates from are the same."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer
    from trl.data_utils import apply_chat_template

    problem, response = "Compute 45 - 12 + 30.", "<think>\n45 - 12 = 33\n33 + 30 = 63\n\\boxed{63}\n</think>\nok"
    eval_ids = tiny_tokenizer.encode(render_prompt(tiny_tokenizer, problem), add_special_tokens=False)

    grpo_text = apply_chat_template({"prompt": build_messages(problem), "answer": "63"}, tiny_tokenizer)["prompt"]
    assert tiny_tokenizer.encode(grpo_text, add_special_tokens=False) == eval_ids

    ds = Dataset.from_list([{"prompt": build_messages(problem),
                            "completion": [{"role": "assistant", "content": response}]}])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False,
                    gradient_checkpointing=False, completion_only_loss=True, max_length=256)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tiny_tokenizer)
    row = trainer.train_dataset[0]
    # TRL marks the tokens without loss with label -100 (older versions: completion_mask == 0)
    trained = [lab != -100 for lab in row["labels"]] if "labels" in row else [m == 1 for m in row["completion_mask"]]
    prompt_ids = [t for t, m in zip(row["input_ids"], trained) if not m]
    completion_ids = [t for t, m in zip(row["input_ids"], trained) if m]
    assert prompt_ids == eval_ids  # completion-only loss: the prompt carries no loss
    assert tiny_tokenizer.decode(completion_ids).startswith(response)


TRACE = "<think>\nWait, 45 - 12 = 33, then 33 + 30 = 63.\n\\boxed{63}\n</think>\nThe answer is \\boxed{63}."


@pytest.mark.parametrize("name", ["deepseek_r1_distill", "qwen2_5", "qwen3", "llama3"])
def test_sft_trains_the_whole_assistant_turn_under_real_templates(name, tmp_path):
    """TRL's own template diff trains only what follows </think> under DeepSeek-R1-Distill (its template drops the
    reasoning); mathrecipe's tokenisation trains the whole trace plus the end-of-turn token, under every template."""
    from conftest import make_template_model_dir
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from mathrecipe.prompts import prompt_ids, turn_format
    from mathrecipe.sft import tokenize_sft

    folder = make_template_model_dir(tmp_path / name, name)
    tok = AutoTokenizer.from_pretrained(folder)
    problem = "Compute 45 - 12 + 30."
    ds = tokenize_sft(Dataset.from_list([{"prompt": build_messages(problem), "completion": TRACE}]), tok)
    cfg = SFTConfig(output_dir=str(tmp_path / "o"), report_to="none", use_cpu=True, bf16=False,
                    gradient_checkpointing=False, completion_only_loss=True, max_length=512)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(folder), args=cfg, train_dataset=ds,
                         processing_class=tok)
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]
    trained = [t for t in labels if t != -100]
    prompt_part = [t for t, lab in zip(ids, labels) if lab == -100]
    fmt = turn_format(tok)
    opening = "<think>\n" if fmt.generation_prefix.endswith("<think>\n") else ""  # DeepSeek's prompt opens it
    assert trained[-1] == fmt.end_id == tok.convert_tokens_to_ids(tok.eos_token)
    assert tok.decode(trained[:-1]) == TRACE[len(opening):]  # reasoning, answer: all of it, once
    assert prompt_part == prompt_ids(tok, problem)  # the prompt GRPO and evaluation use, token for token
    if tok.bos_token_id is not None:
        assert ids.count(tok.bos_token_id) == 1  # the template's BOS, not a second one from the tokenizer
    if name == "deepseek_r1_distill":  # the defect this guards against: TRL's own rendering loses the reasoning
        plain = SFTTrainer(model=trainer.model, args=cfg, processing_class=tok, train_dataset=Dataset.from_list(
            [{"prompt": build_messages(problem), "completion": [{"role": "assistant", "content": TRACE}]}]))
        plain_trained = [t for t in plain.train_dataset[0]["labels"] if t != -100]
        assert "Wait" not in tok.decode(plain_trained) and len(plain_trained) < len(trained) // 2


@pytest.mark.parametrize("name", ["deepseek_r1_distill", "qwen3"])
def test_inspect_json_shows_the_trained_reasoning(name, tmp_path, capsys):
    import json

    from conftest import make_template_model_dir

    from mathrecipe.cli import main

    folder = make_template_model_dir(tmp_path / name, name)
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": build_messages("Compute 45 - 12 + 30.") +
                                [{"role": "assistant", "content": TRACE}]}) + "\n")
    ev = tmp_path / "test.jsonl"
    ev.write_text(json.dumps({"problem": "Compute 1 + 1.", "answer": "2"}) + "\n")
    assert main(["inspect", f"model.name_or_path={folder}", "data.source=files", f"data.sft_path={data}",
                 f"data.test_path={ev}", "grpo.enabled=false", f"output_dir={tmp_path / 'run'}", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert "Wait, 45 - 12 = 33" in rec["sft"]["trained_text"] and rec["sft"]["trained_text"].endswith(
        "The answer is \\boxed{63}." + ("<｜end▁of▁sentence｜>" if name.startswith("deepseek") else "<|im_end|>"))
    assert rec["prompts_identical"] is True
    assert rec["sft"]["n_trained"] < rec["sft"]["n_tokens"]
    assert rec["train_dtype"]["params"] == "float32"
    assert set(rec) == {"sft", "grpo", "eval", "prompts_identical", "train_dtype"}



def test_model_context_reads_the_config_key_transformers_uses():
    assert model_context(SimpleNamespace(max_position_embeddings=2048)) == 2048
    assert model_context(SimpleNamespace(n_positions=1024)) == 1024  # GPT-2 style
    assert model_context(SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=4096))) == 4096
    assert model_context(SimpleNamespace()) is None


def test_overlong_prompts_counts_prompt_plus_budget():
    # context 100: 60 + 40 fits exactly, 61 + 40 does not
    assert overlong_prompts([60, 61, 10], 40, 100) == [1]
    assert overlong_prompts([10**6], 40, None) == []
    line = describe_overlong("eval", ["p7"], [61], 40, 100, "raise it")
    assert "row p7 (61 prompt tokens)" in line and "100" in line and "\n" not in line


OPENED = "Wait, 45 - 12 = 33, then 33 + 30 = 63.\n\\boxed{63}\n</think>\nThe answer is \\boxed{63}."


@pytest.mark.parametrize("trace", [f"<think>{OPENED}", f"<think>\n{OPENED}", f"<think>\n\n{OPENED}",
                                   f"\n<think> {OPENED}"])
def test_r1_distill_prompt_opens_the_reasoning_once_however_the_trace_opens_it(trace):
    """17.7b: R1-Distill's generation prompt ends with ``<think>\\n``. A trace's own ``<think>`` (with a newline, none,
    or more whitespace around it) is the same opening: the row holds ``<think>`` once, and the trained span starts
    at the reasoning itself, as the model continues after the prompt at inference."""
    from conftest import make_template_tokenizer

    from mathrecipe.prompts import sft_tokens, turn_format

    tok = make_template_tokenizer("deepseek_r1_distill")
    fmt = turn_format(tok)
    assert fmt.generation_prefix.endswith("<think>\n")
    row = sft_tokens(tok, build_messages("Compute 45 - 12 + 30."), trace, fmt)
    think = tok.convert_tokens_to_ids("<think>")
    assert row["input_ids"].count(think) == 1  # the prompt's
    trained = [t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]
    assert trained[-1] == fmt.end_id and tok.decode(trained[:-1]) == OPENED


@pytest.mark.parametrize("name", ["qwen3", "qwen2_5"])
def test_a_template_that_opens_no_reasoning_trains_the_traces_think(name):
    """Qwen's generation prompt opens no ``<think>``: the model writes it, so the trace is trained whole."""
    from conftest import make_template_tokenizer

    from mathrecipe.prompts import sft_tokens

    tok = make_template_tokenizer(name)
    trace = f"<think>{OPENED}"
    row = sft_tokens(tok, build_messages("Compute 45 - 12 + 30."), trace)
    trained = [t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]
    assert tok.decode(trained[:-1]) == trace
