"""What the model is shown: the one prompt every stage uses.

SFT, GRPO and evaluation all build their prompts here, and always render them through the tokenizer's
own chat template (a hand-written template that differs from the model's native one was a pitfall of
the paper's code).
"""

from __future__ import annotations

from typing import Any

# The paper's system prompt (arXiv 2507.08267, and DeepSeek-R1's recommended instruction).
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

Message = dict[str, str]


def build_messages(problem: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[Message]:
    """The conversational prompt for one problem: [system, user] (no system turn if it is None or empty)."""
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"problem must be a non-empty string, got {problem!r}")
    messages: list[Message] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": problem})
    return messages


def render_prompt(tokenizer: Any, problem: str, system_prompt: str | None = SYSTEM_PROMPT) -> str:
    """The exact prompt text, ending with the assistant's generation prefix, via the tokenizer's chat template."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
            "mathrecipe renders every prompt through the model's own template (set tokenizer.chat_template)"
        )
    return tokenizer.apply_chat_template(
        build_messages(problem, system_prompt), tokenize=False, add_generation_prompt=True
    )


def sft_example(problem: str, response: str, system_prompt: str | None = SYSTEM_PROMPT) -> dict[str, Any]:
    """A TRL conversational prompt-completion row: loss falls on the completion only."""
    return {
        "prompt": build_messages(problem, system_prompt),
        "completion": [{"role": "assistant", "content": response}],
    }


def grpo_example(problem: str, answer: str, system_prompt: str | None = SYSTEM_PROMPT) -> dict[str, Any]:
    """A TRL conversational GRPO row: the prompt messages and the gold answer for the rewards."""
    return {"prompt": build_messages(problem, system_prompt), "answer": answer}
