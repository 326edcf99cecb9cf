"""What the model is shown: the one prompt every stage uses, and the exact tokens SFT trains on.

SFT, GRPO and evaluation all build their prompts here, always through the tokenizer's own chat template (a
hand-written template that differs from the model's native one was a pitfall of the paper's code), and always as
token ids with ``add_special_tokens=False``: the template writes the BOS itself, so letting the tokenizer add one too
would double it.

SFT does NOT render the assistant turn through the template. Real templates rewrite it: DeepSeek-R1-Distill's drops
everything up to ``</think>`` (the whole reasoning), Qwen3's moves the reasoning around. Training on the template's
rendering of the assistant turn would train on the final summary only. Instead, SFT trains on exactly what inference
produces: prompt ids (identical to GRPO's and evaluation's), then the trace's ids, then the end-of-turn token the model
must emit to stop. When the generation prompt already opens the reasoning (``<｜Assistant｜><think>\\n``), the trace's
copy of that opening is not trained again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mathrecipe.errors import MathRecipeError

# The paper's system prompt (arXiv 2507.08267, and DeepSeek-R1's recommended instruction).
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
# Closes the reasoning: the format reward wants the box before it, --stop-at-think stops there, the toy writes it.
THINK_END = "</think>"

Message = dict[str, str]
_SENTINEL = "MATHRECIPE_SENTINEL_7f3a"


def build_messages(problem: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[Message]:
    """The conversational prompt for one problem: [system, user] (no system turn if it is None or empty)."""
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"problem must be a non-empty string, got {problem!r}")
    messages: list[Message] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": problem})
    return messages


def _require_template(tokenizer: Any) -> None:
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
            "mathrecipe renders every prompt through the model's own template (set tokenizer.chat_template)"
        )


def render_messages(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The template's text for ``messages``, ending with the assistant's generation prompt."""
    _require_template(tokenizer)
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def render_prompt(tokenizer: Any, problem: str, system_prompt: str | None = SYSTEM_PROMPT) -> str:
    """The exact prompt text, ending with the assistant's generation prefix, via the tokenizer's chat template."""
    return render_messages(tokenizer, build_messages(problem, system_prompt))


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of already-rendered text: never with added special tokens (the template wrote them)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(tokenizer: Any, problem: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[int]:
    """The prompt's token ids, as SFT trains on them, GRPO samples from them and evaluation generates from them."""
    return encode_text(tokenizer, render_prompt(tokenizer, problem, system_prompt))


def batch_prompt_ids(tokenizer: Any, problems: Sequence[str],
                     system_prompt: str | None = SYSTEM_PROMPT) -> list[list[int]]:
    """:func:`prompt_ids` of many problems in one tokenizer call: what every generation backend is given."""
    texts = [render_prompt(tokenizer, p, system_prompt) for p in problems]
    return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def messages_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Token ids of a conversational prompt (system/user turns) plus the generation prompt."""
    return encode_text(tokenizer, render_messages(tokenizer, messages))


@dataclass(frozen=True)
class TurnFormat:
    """How the tokenizer's chat template opens and closes the assistant's turn.

    generation_prefix: what ``add_generation_prompt`` appends (e.g. ``<|im_start|>assistant\\n``, or
    ``<｜Assistant｜><think>\\n`` for DeepSeek-R1-Distill, which opens the reasoning for the model).
    end_id: the token that ends an assistant turn (``<|im_end|>``, ``<｜end▁of▁sentence｜>``, ``<|eot_id|>``); the model
    learns to emit it, and generation stops on it.
    """

    generation_prefix: str
    end_id: int


def turn_format(tokenizer: Any) -> TurnFormat:
    """Read :class:`TurnFormat` off the chat template by rendering a sentinel conversation."""
    _require_template(tokenizer)
    user = [{"role": "user", "content": "1 + 1"}]
    with_gen = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=False)
    if not with_gen.startswith(without):
        raise ValueError("the chat template renders a prompt differently with and without add_generation_prompt; "
                         "mathrecipe cannot find where the assistant's turn starts")
    prefix = with_gen[len(without):]
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": _SENTINEL}], tokenize=False)
    cut = full.rfind(_SENTINEL)
    after = full[cut + len(_SENTINEL):] if cut >= 0 else ""
    tail = encode_text(tokenizer, after) if after else []
    special = set(tokenizer.all_special_ids) | {
        i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)
    }
    if tail and tail[0] in special:
        end_id = tail[0]
    elif tokenizer.eos_token_id is not None:
        end_id = int(tokenizer.eos_token_id)
    else:
        raise ValueError("the tokenizer has no eos token and its chat template closes assistant turns with no "
                         "special token: set tokenizer.eos_token")
    return TurnFormat(prefix, int(end_id))


def strip_opening(trace: str, generation_prefix: str) -> str:
    """The trace without the opening that the generation prompt already wrote.

    The opening is the longest tail of the prefix (its trailing whitespace aside) that starts with a tag (``<``),
    such as ``<think>`` or ``<｜Assistant｜><think>``. When the trace, after any leading whitespace, starts with it,
    that copy is cut with the whitespace before it, and with the whitespace after it when the prefix ends in
    whitespace (which stands in for it; kept when the prefix ends without any). So under ``<｜Assistant｜><think>\\n`` the
    traces ``<think>\\nWait``, ``<think>Wait`` and ``<think>\\n\\nWait`` all train ``Wait``, never a second
    ``<think>``. A trace that does not start with the opening (``Wait``, a lone newline, ``<think>`` under a prefix
    that opens none) is kept whole.
    """
    head = generation_prefix.rstrip()
    body = trace.lstrip()
    for start in range(len(head)):  # the longest opening first
        if head[start] == "<" and body.startswith(head[start:]):
            rest = body[len(head) - start:]
            return rest.lstrip() if len(head) < len(generation_prefix) else rest
    return trace


def sft_tokens(tokenizer: Any, prompt: Sequence[Message], completion: str,
               fmt: TurnFormat | None = None) -> dict[str, list[int]]:
    """``input_ids`` and ``completion_mask`` (1 = trained) for one SFT row: prompt ids, trace ids, end-of-turn id.

    The trained span is the whole assistant turn (reasoning, final answer, end token), never re-rendered by the
    template. Pass ``fmt`` (from :func:`turn_format`) when tokenising many rows.
    """
    fmt = fmt or turn_format(tokenizer)
    p = messages_ids(tokenizer, prompt)
    body = strip_opening(completion, fmt.generation_prefix)
    end_text = tokenizer.convert_ids_to_tokens(fmt.end_id)
    if isinstance(end_text, str) and body.endswith(end_text):  # a trace that already carries the end token
        body = body[: -len(end_text)]
    c = (encode_text(tokenizer, body) if body else []) + [fmt.end_id]
    return {"input_ids": p + c, "completion_mask": [0] * len(p) + [1] * len(c)}


# ------------------------------------------------------------------------------------------ context length

# config attributes that hold a model's context window, in the order transformers' own configs use them
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def model_context(config: Any) -> int | None:
    """The model's context window in tokens (prompt + completion), read off its config; None when it sets none."""
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    text = getattr(config, "text_config", None)  # multimodal configs nest the language model's
    return model_context(text) if text is not None and text is not config else None


def overlong_prompts(prompt_lengths: Sequence[int], max_new_tokens: int, context: int | None) -> list[int]:
    """Indices of prompts that cannot fit: prompt tokens + ``max_new_tokens`` > ``context`` (none when unknown).

    A prompt past the model's positions makes generation produce garbage (or, for a 5 MB problem, run out of
    memory); one that leaves fewer than ``max_new_tokens`` positions cuts every answer short of its budget.
    """
    if context is None:
        return []
    return [i for i, n in enumerate(prompt_lengths) if n + max_new_tokens > context]


def describe_overlong(where: str, rows: Sequence[Any], prompt_lengths: Sequence[int | str], max_new_tokens: int,
                      context: int, fix: str) -> str:
    """One line naming how many prompts do not fit, the first row, and the fix. ``rows`` are row labels (ids or
    1-based row numbers) of the over-long prompts, ``prompt_lengths`` their lengths."""
    first = f"{rows[0]} ({prompt_lengths[0]} prompt tokens)" if rows else ""
    return (f"{where}: {len(rows)} prompt(s) + max_new_tokens={max_new_tokens} exceed the model's context of "
            f"{context} tokens (first: row {first}); {fix}")


CHARS_PER_TOKEN_CAP = 8  # more characters per token than real tokenizers average on any text (English: ~4)
Prompt = str | Sequence[Message]  # a problem (rendered with the system prompt) or the conversation itself


def prompt_tokens(tokenizer: Any, prompts: Sequence[Prompt], system_prompt: str | None,
                  context: int | None) -> list[tuple[list[int] | None, int]]:
    """(token ids, prompt tokens) per prompt, through the chat template; ids are None where the count is an
    estimate from a prefix. The one prompt-length measurement: ``eval``, the in-run evaluation, GRPO's data check
    (:func:`checked_prompt_ids`) and ``solve`` (which skips what does not fit) all use it.

    A problem longer than CHARS_PER_TOKEN_CAP x ``context`` characters is measured on that prefix first: when the
    prefix alone holds more tokens than the context, the whole prompt cannot fit either (its tokens are at least
    the prefix's), and its count is estimated as the prefix's x (characters / prefix characters). This keeps a 5 MB
    problem to a short tokenisation: whole, it took 38 s and 1.8 GB with the toy tokenizer. Conversations (message
    lists) are counted whole.
    """
    out: list[tuple[list[int] | None, int] | None] = [None] * len(prompts)
    cap = CHARS_PER_TOKEN_CAP * context if context else None
    whole = []
    for i, p in enumerate(prompts):
        if cap is not None and isinstance(p, str) and len(p) > cap:
            n = len(batch_prompt_ids(tokenizer, [p[:cap]], system_prompt)[0])
            if n > cap // CHARS_PER_TOKEN_CAP:
                out[i] = (None, n * len(p) // cap)
                continue
        whole.append(i)
    texts = [render_prompt(tokenizer, p, system_prompt) if isinstance(p, str) else render_messages(tokenizer, p)
             for p in (prompts[i] for i in whole)]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []  # one batch
    for i, ids in zip(whole, encoded):
        out[i] = (list(ids), len(ids))
    return out  # type: ignore[return-value]


def checked_prompt_ids(tokenizer: Any, prompts: Sequence[Prompt], labels: Sequence[Any], system_prompt: str | None,
                       max_new_tokens: int, context: int | None, where: str, fix: str,
                       error: type[Exception] = MathRecipeError) -> list[list[int]]:
    """The token ids of every prompt (:func:`prompt_tokens`), after checking that prompt + ``max_new_tokens``
    fits the model's ``context`` (:func:`overlong_prompts`); otherwise ``error`` with one line naming how many do
    not fit and the first (:func:`describe_overlong`; ``labels`` name the prompts, ``where`` the input, ``fix`` the
    way out). Counts estimated from a prefix are shown as "about N"."""
    measured = prompt_tokens(tokenizer, prompts, system_prompt, context)
    over = overlong_prompts([n for _, n in measured], max_new_tokens, context)
    if over:
        lengths = [n if ids is not None else f"about {n}" for ids, n in (measured[i] for i in over)]
        raise error(describe_overlong(where, [labels[i] for i in over], lengths, max_new_tokens, context, fix))
    return [ids for ids, _ in measured]  # type: ignore[misc]
