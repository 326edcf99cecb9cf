"""The embedded toy: a synthetic math task and a tiny Llama model, built from nothing (no downloads).

Task: "Compute a +- b +- c" with three two-digit operands and every running total in 10..99, so every number is
exactly two digits wide (with mixed widths a ~1M-parameter model never learned to copy the right operand), and
every step digit-wise: no carry, no borrow. With carries the units digit is (a0 +- b0) mod 10, modular arithmetic
that a tiny model learns in a sudden, late jump whose timing depended on the machine's floating-point rounding
(bench/results/toy_experiments.md); digit-wise, SFT learns it by epochs 3-6 on every seed and kernel choice tried.
Teacher traces are shaped like R1 traces; a seeded fraction re-checks work already done ("Wait, let me verify."),
so the SFT model learns to be verbose sometimes -- the situation GRPO's length rewards fix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathrecipe.prompts import SYSTEM_PROMPT, THINK_END

THINK, BOXED = "<think>", "\\boxed{"
IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|pad|>"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ToyProblem:
    problem: str
    answer: str
    steps: tuple[tuple[int, str, int, int], ...]  # (left, op, right, result)


def _sample_problem(rng: random.Random, n_operands: int = 3, carries: bool = False) -> ToyProblem:
    """One problem; ``carries=False`` keeps every step digit-wise (no carry, no borrow)."""
    while True:
        total = rng.randint(10, 99)
        text, steps = [str(total)], []
        ok = True
        for _ in range(n_operands - 1):
            op = rng.choice("+-")
            if not _can_step(total, op, carries):
                op = "-" if op == "+" else "+"
            if not _can_step(total, op, carries):
                ok = False
                break
            b = _draw_operand(rng, total, op, carries)
            new = total + b if op == "+" else total - b
            steps.append((total, op, b, new))
            text.append(f"{op} {b}")
            total = new
        if ok:
            return ToyProblem(f"Compute {' '.join(text)}.", str(total), tuple(steps))


def _can_step(total: int, op: str, carries: bool) -> bool:
    if carries:  # a two-digit b that keeps the total in 10..99
        return 99 - total >= 10 if op == "+" else total - 10 >= 10
    tens = total // 10  # b's tens digit is >= 1 and the result's tens digit stays in 1..9
    return tens <= 8 if op == "+" else tens >= 2


def _draw_operand(rng: random.Random, total: int, op: str, carries: bool) -> int:
    if carries:
        return rng.randint(10, 99 - total) if op == "+" else rng.randint(10, total - 10)
    tens, units = divmod(total, 10)
    if op == "+":
        return 10 * rng.randint(1, 9 - tens) + rng.randint(0, 9 - units)
    return 10 * rng.randint(1, tens - 1) + rng.randint(0, units)


def teacher_trace(p: ToyProblem, verify_blocks: int = 0) -> str:
    """An R1-shaped solution: ``<think>`` steps, optional redundant re-checks, the boxed answer, ``</think>``."""
    work = "".join(f"{a} {op} {b} = {r}\n" for a, op, b, r in p.steps)
    checks = "Wait, let me verify.\n" + work
    return f"{THINK}\n{work}{checks * verify_blocks}\\boxed{{{p.answer}}}\n{THINK_END}\nThe answer is \\boxed{{{p.answer}}}."


@dataclass
class ToySplits:
    sft: list[dict[str, str]]  # problem, answer, response
    test: list[dict[str, str]]  # problem, answer
    grpo: list[dict[str, str]]  # problem, answer


def make_toy_data(
    n_sft: int = 2000,
    n_test: int = 200,
    n_grpo: int = 3000,
    verbose_fraction: float = 0.5,
    max_verify_blocks: int = 3,
    seed: int = 0,
    carries: bool = False,
) -> ToySplits:
    """Seeded splits. The test problems appear in neither training split.

    ``carries=True`` allows carries and borrows (the first toy design; its SFT breakthrough hinged on the machine).
    """
    if not 0 <= verbose_fraction <= 1:
        raise ValueError(f"verbose_fraction must be in [0, 1], got {verbose_fraction}")
    rng = random.Random(seed)
    seen: set[str] = set()

    def fresh(n: int) -> list[ToyProblem]:
        out = []
        guard = 0
        while len(out) < n:
            p = _sample_problem(rng, carries=carries)
            guard += 1
            if guard > 50 * (n + 100):
                raise ValueError(f"could not draw {n} distinct toy problems (the task has too few)")
            if p.problem not in seen:
                seen.add(p.problem)
                out.append(p)
        return out

    test = fresh(n_test)  # drawn first so training never sees them
    sft = fresh(n_sft)
    grpo = fresh(n_grpo)
    sft_rows = []
    for p in sft:
        k = rng.randint(1, max_verify_blocks) if rng.random() < verbose_fraction else 0
        sft_rows.append({"problem": p.problem, "answer": p.answer, "response": teacher_trace(p, k)})
    return ToySplits(
        sft=sft_rows,
        test=[{"problem": p.problem, "answer": p.answer} for p in test],
        grpo=[{"problem": p.problem, "answer": p.answer} for p in grpo],
    )


# ------------------------------------------------------------------------------------------- tokenizer


def build_tokenizer(corpus: list[str], vocab_size: int = 384) -> Any:
    """A byte-level BPE tokenizer trained on ``corpus``, digits always single tokens, with a ChatML template.

    Digits are split off before BPE: a tokenizer that merged a space with the next digit tokenized the same digit
    differently by position, and the model learned worse. With room for ~344 tokens (``vocab_size`` >= 352), BPE
    makes every word of the system prompt one token: the rendered prompt is 41 tokens instead of 61 at 320.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [PAD, IM_START, IM_END]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, additional_special_tokens=[IM_START]
    )
    # Not special: they must survive decode(skip_special_tokens=True), which TRL uses for completions.
    fast.add_tokens([THINK, THINK_END, BOXED])
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def toy_corpus(splits: ToySplits, system_prompt: str = SYSTEM_PROMPT) -> list[str]:
    texts = [system_prompt, "system", "user", "assistant", "Wait, let me verify.", "The answer is"]
    texts += [r["problem"] for r in splits.sft] + [r["response"] for r in splits.sft]
    texts += [r["problem"] for r in splits.grpo[:500]]
    return texts


def build_model(tokenizer: Any, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                intermediate_size: int = 512, seed: int = 0) -> Any:
    """A tiny Llama (a Qwen2 config would make transformers swap in Qwen's tokenizer class)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    eos, pad = tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(PAD)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
    return model


def build_toy_model_folder(out_dir: str | Path, splits: ToySplits, vocab_size: int = 384, seed: int = 0,
                           system_prompt: str = SYSTEM_PROMPT, **model_kwargs: int) -> Path:
    """Train the tokenizer, build the model, and save both as a standard HF folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(toy_corpus(splits, system_prompt), vocab_size=vocab_size)
    model = build_model(tok, seed=seed, **model_kwargs)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------ a run's toy inputs

DONE = "DONE.json"  # in a folder whose work finished: a toy model or data build, a stage of a run


def _build_once(out: Path, build: Any) -> None:
    """``build(tmp)`` (returning the DONE record) into a temporary folder renamed into place, once: a kill never
    leaves half a folder, and a finished one is reused."""
    import shutil

    from mathrecipe.files import atomic_write_json, replace_dir

    if (out / DONE).is_file():
        return
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    record = build(tmp)
    atomic_write_json(tmp / DONE, record)
    replace_dir(tmp, out)


def toy_splits(recipe: Any) -> tuple[ToySplits, list[dict[str, str]]]:
    """The recipe's toy task (seeded, so the model's tokenizer and the data step see the same splits), and its dev
    problems: the last ``n_dev`` GRPO problems, set apart (disjoint from the SFT, GRPO and test problems)."""
    t = recipe.data.toy
    splits = make_toy_data(t.n_sft, t.n_test, t.n_grpo + t.n_dev, t.verbose_fraction, t.max_verify_blocks,
                           seed=recipe.seed)
    dev = splits.grpo[t.n_grpo:]
    splits.grpo = splits.grpo[: t.n_grpo]
    return splits, dev


def prepare_toy_model(recipe: Any, out: Path) -> str:
    """The toy's starting model: a tiny Llama and its tokenizer built from the toy task into ``out`` (once)."""
    m = recipe.model

    def build(tmp: Path) -> dict[str, str]:
        build_toy_model_folder(tmp, toy_splits(recipe)[0], vocab_size=m.toy.vocab_size, seed=recipe.seed,
                               system_prompt=recipe.data.system_prompt, hidden_size=m.toy.hidden_size,
                               num_layers=m.toy.num_layers, num_heads=m.toy.num_heads,
                               intermediate_size=m.toy.intermediate_size)
        return {"model": "toy"}

    _build_once(out, build)
    return str(out)


def prepare_toy_data(recipe: Any, out: Path, tokenizer_path: str) -> dict[str, Path]:
    """The toy's SFT, GRPO, test and dev sets in ``out`` (once): generated, then built by the same code as
    ``mathrecipe data build`` (normalise, shortest correct trace, dedup, decontaminate, report)."""

    def build(tmp: Path) -> dict[str, Any]:
        import datasets

        from mathrecipe.console import dataset_bars
        from mathrecipe.data.build import build_sets, register, write_outputs
        from mathrecipe.data.io import write_jsonl
        from mathrecipe.data.report import BuildReport
        from mathrecipe.data.sources import normalise_openr1, normalise_problems
        from mathrecipe.modeling import load_tokenizer

        d = recipe.data
        splits, dev_rows = toy_splits(recipe)
        test = [{"id": f"toy-{i}", **r} for i, r in enumerate(splits.test)]
        dev = [{"id": f"toy-dev-{i}", **r} for i, r in enumerate(dev_rows)]
        # the toy teacher traces in OpenR1-Math's schema: one generation each, verified correct
        raw = datasets.Dataset.from_list([{"problem": r["problem"], "answer": r["answer"],
                                           "generations": [r["response"]], "correctness_math_verify": [True]}
                                          for r in splits.sft])
        report = BuildReport()
        with dataset_bars(len(splits.sft) + len(splits.grpo)):
            sft_src = register(report, "toy", normalise_openr1(raw, "toy"))
            grpo_src = normalise_problems(datasets.Dataset.from_list(splits.grpo), "toy-grpo")
            sft, grpo = build_sets([("toy", sft_src)], [("toy-grpo", grpo_src)], {"toy-test": test, "toy-dev": dev},
                                   load_tokenizer(tokenizer_path, recipe.model), d.build, d.system_prompt, report)
            write_outputs(tmp, sft, grpo, report, {"benchmarks": ["toy-test", "toy-dev"], "ngram": d.build.ngram},
                          sft_max_length=recipe.sft.max_length)
        write_jsonl(test, tmp / "test.jsonl")
        write_jsonl(dev, tmp / "dev.jsonl")
        return {"rows": {"test": len(test), "dev": len(dev)}}

    _build_once(out, build)
    return {"sft": out / "sft", "grpo": out / "grpo", "test": out / "test.jsonl", "dev": out / "dev.jsonl"}
