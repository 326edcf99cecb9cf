"""The in-run evaluation of ``mathrecipe run``: after every SFT epoch (the model in memory) and for saved models
(the start model, the GRPO policy), on the test problems, with the recipe's ``eval`` settings.

Rank-aware: under a multi-process launch EVERY rank must call :func:`evaluate_for_recipe` /
:func:`evaluate_saved_model`. The problems are split across ranks (strided, padded so that every rank generates the
same number of sequences and so calls ``generate`` equally often -- under ZeRO-3 / FSDP transformers syncs the
ranks inside each call), each rank grades its share, the rows are gathered, and every rank returns the same rows
and summary. Only the caller decides who writes files (rank 0).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from mathrecipe.errors import MathRecipeError
from mathrecipe.evaluate.generation import Generator, HFGenerator, SamplingSettings, make_generator
from mathrecipe.evaluate.metrics import summarize
from mathrecipe.evaluate.samples import grade_completions
from mathrecipe.evaluate.sampling import recipe_settings
from mathrecipe.grading import Grader
from mathrecipe.prompts import SYSTEM_PROMPT, checked_prompt_ids

Rows = list[dict[str, Any]]


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a multi-process launch."""
    from mathrecipe.hardware import distributed_state

    state = distributed_state()
    return state.process_index, state.num_processes


def rank_share(n: int, rank: int, world: int) -> list[tuple[int, bool]]:
    """This rank's problems as (index, is_padding): indices rank, rank + world, ...; ranks with one fewer get a
    repeat of problem 0 marked as padding, so every rank has ceil(n / world) and calls generate equally often."""
    share = [(i, False) for i in range(rank, n, world)]
    width = -(-n // world)
    return share + [(0, True)] * (width - len(share))


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _broadcast(obj: Any, world: int) -> Any:
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def problem_prompt_ids(tokenizer: Any, problems: Sequence[Mapping[str, Any]], system_prompt: str | None,
                       max_new_tokens: int, context: int | None, where: str) -> list[list[int]]:
    """The test problems' prompt ids, each prompt + ``max_new_tokens`` checked against the model's ``context``
    (``checked_prompt_ids``): one line naming the rows that do not fit, refused rather than skipped -- a number over
    fewer problems would read as the set's. ``mathrecipe run`` checks before training, and again here."""
    return checked_prompt_ids(tokenizer, [str(p["problem"]) for p in problems],
                              [f"{i} (id {p['id']})" for i, p in enumerate(problems, 1)], system_prompt,
                              max_new_tokens, context, where=where,
                              fix="leave those problems out of the test set, or lower eval.max_new_tokens if the "
                              "prompt alone fits (skipping them would report a number over fewer problems)")


def evaluate_model(
    generator: Generator,
    tokenizer: Any,
    problems: Sequence[Mapping[str, Any]],
    settings: SamplingSettings,
    system_prompt: str | None = SYSTEM_PROMPT,
    ks: Sequence[int] = (),
    budgets: Sequence[int] = (),
    grader: Grader | None = None,
    desc: str = "evaluate",
    progress: bool = True,
) -> tuple[Rows, dict[str, Any]]:
    """Sample ``settings.samples`` completions per problem, grade them and summarise; rank-aware (module doc).

    ``problems`` are dicts with ``id``, ``problem`` and ``answer``. Returns (sample rows in problem order, summary),
    the same on every rank.
    """
    if not problems:
        raise MathRecipeError("no problems to evaluate: the test set is empty")
    rank, world = dist_info()
    # every rank checks the same prompts against the same model, so a refusal stops every rank alike
    ids = problem_prompt_ids(tokenizer, problems, system_prompt, settings.max_new_tokens,
                             getattr(generator, "context", None), where=f"evaluation ({desc})")
    share = rank_share(len(problems), rank, world)
    if world > 1 and isinstance(generator, HFGenerator):
        # one batch size on every rank (free memory differs per device), or the generate calls would not pair up
        bs = min(_gather(generator.batch_size_for(ids, settings), world))
        generator = HFGenerator(generator.model, generator.tokenizer, batch_size=bs)
    with tqdm(total=len(share) * settings.samples, desc=desc, unit="sample", leave=False,
              disable=not progress or rank != 0) as bar:
        completions = generator.generate([ids[i] for i, _ in share],
                                         dataclasses.replace(settings, seed=settings.seed + rank), bar.update)
    real = [(i, c) for (i, pad), c in zip(share, completions) if not pad]
    rows = grade_completions([problems[i] for i, _ in real], [c for _, c in real], tokenizer, grader)
    order = [i for i, c in real for _ in c]
    if world > 1:
        tagged = sorted((i, r["sample"], r) for part in _gather(list(zip(order, rows)), world) for i, r in part)
        rows = [r for _, _, r in tagged]
    if len(rows) != len(problems) * settings.samples:
        raise RuntimeError(f"evaluation gathered {len(rows)} rows for {len(problems)} problems x "
                           f"{settings.samples} samples")
    summary = None
    if rank == 0:  # once, then shared: a grading timeout on one rank must not make the summaries differ
        from mathrecipe.evaluate.run import same_answer

        summary = summarize(rows, ks=ks, budgets=budgets, same=same_answer(grader))
    return rows, _broadcast(summary, world)


def evaluate_for_recipe(recipe: Any, model: Any, tokenizer: Any, problems: Sequence[Mapping[str, Any]],
                        desc: str) -> tuple[Rows, dict[str, Any]]:
    """Evaluate a model in memory (an SFT epoch) with the recipe's eval settings, seed and system prompt, through
    transformers (``eval.generate_batch_size``, ``eval.kv_cache_gib``). Call it on every rank."""
    e = recipe.eval
    gen = HFGenerator(model, tokenizer, batch_size=e.generate_batch_size, kv_cache_gib=e.kv_cache_gib)
    return evaluate_model(gen, tokenizer, problems, recipe_settings(recipe), recipe.data.system_prompt, desc=desc)


def evaluate_saved_model(recipe: Any, model_path: str, tokenizer: Any, problems: Sequence[Mapping[str, Any]],
                         desc: str) -> tuple[Rows, dict[str, Any]]:
    """Evaluate a saved checkpoint with the recipe's eval settings and ``eval.backend`` (``generation.BACKENDS``;
    hf: loaded here on this rank's device, bf16 on GPU; vllm: one engine per rank). Call it on every rank."""
    import torch

    rank, world = dist_info()
    e = recipe.eval
    device = (torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available()
              else torch.device("cpu"))
    gen = make_generator(e.backend, model_path, tokenizer, batch_size=e.generate_batch_size,
                         kv_cache_gib=e.kv_cache_gib, seed=recipe.seed + rank, processes=world,
                         model_config=recipe.model, device=device)
    try:
        return evaluate_model(gen, tokenizer, problems, recipe_settings(recipe), recipe.data.system_prompt,
                              desc=desc)
    finally:
        del gen
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
