"""Generation backends: batched transformers generation (works on CPU) and vLLM (GPU, optional extra).

Both take rendered prompt strings and return, per prompt, ``n`` :class:`Completion` objects with the completion's
text, its token ids and whether it finished (end of sequence, or ``</think>`` with ``stop_at_think``) or was cut off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mathrecipe.errors import MathRecipeError

THINK_END = "</think>"


@dataclass
class SamplingSettings:
    n: int = 1
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    min_p: float | None = None
    max_new_tokens: int = 512
    seed: int = 0
    stop_at_think: bool = False  # stop at </think>: the paper's inference trick (the answer is in the reasoning)


@dataclass
class Completion:
    text: str
    token_ids: list[int] = field(repr=False)
    finished: bool

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def _stop_ids(model: Any, tokenizer: Any, stop_at_think: bool) -> tuple[list[int], list[str]]:
    """Token ids that end a completion, and stop strings that span several tokens."""
    ids: list[int] = []
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in eos if isinstance(eos, (list, tuple)) else [eos]:
        if e is not None:
            ids.append(int(e))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    strings: list[str] = []
    if stop_at_think:
        think = tokenizer.encode(THINK_END, add_special_tokens=False)
        if len(think) == 1:
            ids.append(think[0])
        else:
            strings.append(THINK_END)
    if not ids:
        raise ValueError("the model and tokenizer define no end-of-sequence token; set generation_config.eos_token_id")
    return ids, strings


def generate_hf(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: SamplingSettings,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[Completion]]:
    """Batched generation with transformers: left padding, KV cache, ``batch_size`` sequences per call.

    Each prompt is repeated ``n`` times; sequences are sorted by prompt length so padding stays small.
    ``on_batch(k)`` is called after each batch with the number of sequences done (for progress bars).
    """
    import torch

    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; batched generation needs one (set tokenizer.pad_token)")
    stop_ids, stop_strings = _stop_ids(model, tokenizer, settings.stop_at_think)
    jobs = [(i, j) for i in range(len(prompts)) for j in range(settings.n)]
    lengths = [len(tokenizer.encode(p, add_special_tokens=False)) for p in prompts]
    jobs.sort(key=lambda ij: lengths[ij[0]])
    out: list[list[Completion | None]] = [[None] * settings.n for _ in prompts]

    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    gen_kwargs: dict[str, Any] = dict(
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    if settings.temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        if settings.min_p:
            gen_kwargs["min_p"] = settings.min_p
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if stop_strings:
        gen_kwargs.update(stop_strings=stop_strings, tokenizer=tokenizer)
    device = next(model.parameters()).device
    torch.manual_seed(settings.seed)
    try:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            enc = tokenizer([prompts[i] for i, _ in batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            with torch.no_grad():
                seqs = model.generate(**enc, **gen_kwargs)
            new = seqs[:, enc["input_ids"].shape[1] :].tolist()
            for (i, j), row in zip(batch, new):
                out[i][j] = _finish(row, stop_ids, stop_strings, tokenizer)
            if on_batch:
                on_batch(len(batch))
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return out  # type: ignore[return-value]


def _finish(row: list[int], stop_ids: list[int], stop_strings: list[str], tokenizer: Any) -> Completion:
    """Cut a generated row after its first stop token (kept, as TRL keeps EOS) and decode it."""
    stops = set(stop_ids)
    cut, finished = len(row), False
    for k, t in enumerate(row):
        if t in stops:
            cut, finished = k + 1, True
            break
    ids = row[:cut]
    if not finished:  # drop right padding that follows a multi-token stop string
        while ids and ids[-1] == tokenizer.pad_token_id:
            ids.pop()
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if stop_strings and not finished:
        for s in stop_strings:
            pos = text.find(s)
            if pos >= 0:
                text, finished = text[: pos + len(s)], True
    return Completion(text=text, token_ids=ids, finished=finished)


class VLLMMissing(MathRecipeError, RuntimeError):
    """vLLM was asked for but is not installed."""


class VLLMBackend:
    """Generation with vLLM (``pip install 'mathrecipe[vllm]'``): same settings and outputs as :func:`generate_hf`."""

    def __init__(self, model_path: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, seed: int = 0) -> None:
        try:
            from vllm import LLM
        except ImportError as e:
            raise VLLMMissing(
                "backend 'vllm' needs vLLM, which is not installed: pip install 'mathrecipe[vllm]' (GPU machines), "
                "or use --backend hf"
            ) from e
        self.llm = LLM(model=model_path, tensor_parallel_size=tensor_parallel_size, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len)

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=settings.n,
            temperature=settings.temperature,
            top_p=settings.top_p if settings.temperature > 0 else 1.0,
            min_p=settings.min_p or 0.0,
            max_tokens=settings.max_new_tokens,
            seed=settings.seed,
            stop=[THINK_END] if settings.stop_at_think else None,
            include_stop_str_in_output=True,
        )
        results = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [
            [Completion(text=o.text, token_ids=list(o.token_ids), finished=o.finish_reason == "stop")
             for o in r.outputs]
            for r in results
        ]


def answer_tokens(completion: Completion, char_end: int | None, tokenizer: Any) -> int | None:
    """How many of the completion's tokens it takes to finish its final answer (the answer ends at ``char_end``).

    The smallest k with len(decode(ids[:k])) >= char_end, found by bisection (decode length grows with k).
    """
    if char_end is None:
        return None
    ids = completion.token_ids
    lo, hi = 1, len(ids)
    if hi == 0:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=True)) >= char_end:
            hi = mid
        else:
            lo = mid + 1
    return lo
