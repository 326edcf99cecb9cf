import pytest

from mathrecipe.prompts import SYSTEM_PROMPT, build_messages, grpo_example, render_prompt, sft_example


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

    grpo_text = apply_chat_template(grpo_example(problem, "63"), tiny_tokenizer)["prompt"]
    assert tiny_tokenizer.encode(grpo_text, add_special_tokens=False) == eval_ids

    ds = Dataset.from_list([sft_example(problem, response)])
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
