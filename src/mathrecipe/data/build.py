"""``mathrecipe data build``: the stage-1 SFT set and the stage-2 GRPO set, decontaminated, with a data report.

recipe -> sources (hub or local, checked before anything loads) -> normalise -> OpenR1 sampling -> shortest correct
trace (tokens) -> merge -> dedup -> decontaminate -> length filter -> TRL conversational rows (saved with
``datasets``, with the system prompt in their metadata) -> data_report.

Every dropped row is counted under its reason; nothing is lost silently. Token lengths are counted in batches with
the fast tokenizer and only the lengths are kept (never all traces' token ids at once).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

from mathrecipe import __version__
from mathrecipe.console import dataset_bars
from mathrecipe.data.decontam import NgramIndex, build_index, first_match, normalise_text
from mathrecipe.data.io import save_dataset
from mathrecipe.data.report import BuildReport, length_check, length_stats, write_data_report
from mathrecipe.data.sources import SOURCES, load_source
from mathrecipe.hub import resolve
from mathrecipe.prompts import build_messages
from mathrecipe.recipe import BuildConfig, Recipe, RecipeError, SampleConfig

log = logging.getLogger(__name__)

def register(report: BuildReport, name: str, ds: Any) -> Any:
    """Count a normalised source's rows in, then drop (and count by reason) the rows marked unusable."""
    report.source(name, len(ds))
    return _drop_marked(ds, report, name)


def _drop_marked(ds: Any, report: BuildReport, set_name: str) -> Any:
    """Count rows whose ``reason`` is set, per source and reason, then filter them out."""
    counts = Counter((s, r) for s, r in zip(ds["source"], ds["reason"]) if r)
    for (source, reason), n in counts.items():
        report.drop(source, reason, n)
    kept = ds.filter(lambda rs: [not r for r in rs], input_columns=["reason"], batched=True,
                     desc=f"drop rows ({set_name})")
    return kept


def with_trace_columns(ds: Any) -> Any:
    """Add unmeasured ``trace`` / ``trace_tokens`` columns ("" / -1) where a part has none yet."""
    if "trace" in ds.column_names:
        return ds
    return ds.add_column("trace", [""] * len(ds)).add_column("trace_tokens", [-1] * len(ds))


def shortest_traces(ds: Any, tokenizer: Any, batch_size: int = 1000, num_proc: int = 1) -> Any:
    """Per row, the verified-correct generation with the fewest tokens, and that count (``trace``,
    ``trace_tokens``). Rows already measured (trace_tokens >= 0) are kept as they are."""

    def fn(batch: dict[str, list]) -> dict[str, list]:
        traces, lengths = list(batch["trace"]), list(batch["trace_tokens"])
        todo = [(i, g) for i, (gens, t) in enumerate(zip(batch["generations"], lengths)) if t < 0 for g in gens]
        if todo:
            counts = [len(x) for x in tokenizer([g for _, g in todo], add_special_tokens=False)["input_ids"]]
            for (i, g), n in zip(todo, counts):
                if lengths[i] < 0 or n < lengths[i]:
                    traces[i], lengths[i] = g, n
        return {"trace": traces, "trace_tokens": lengths}

    return with_trace_columns(ds).map(fn, batched=True, batch_size=batch_size, num_proc=num_proc, desc="shortest correct trace")


def select_sample(ds: Any, cfg: SampleConfig, tokenizer: Any, seed: int, report: BuildReport, source: str,
                  batch_size: int = 1000, num_proc: int = 1) -> Any:
    """The paper's OpenR1 sample of a source: n_long long traces with accuracy > long_min_accuracy, plus n_mid with
    accuracy in [mid_min, mid_max] (drawn from the rest). A trace is long when its kept (shortest correct) trace has
    more than long_min_tokens tokens; tokens <= bytes, so only rows whose smallest correct trace has that many bytes
    are tokenized for the test."""
    rng = random.Random(seed)
    acc = ds["accuracy"]
    min_bytes = ds["min_bytes"]
    cand_long = [i for i, (a, b) in enumerate(zip(acc, min_bytes))
                 if a > cfg.long_min_accuracy and b > cfg.long_min_tokens]
    measured = shortest_traces(ds.select(cand_long), tokenizer, batch_size, num_proc)
    long_ok = [i for i, t in zip(cand_long, measured["trace_tokens"]) if t > cfg.long_min_tokens]
    chosen_long = long_ok if cfg.n_long is None else rng.sample(long_ok, min(cfg.n_long, len(long_ok)))
    taken = set(chosen_long)
    mid = [i for i, a in enumerate(acc) if cfg.mid_min_accuracy <= a <= cfg.mid_max_accuracy and i not in taken]
    chosen_mid = mid if cfg.n_mid is None else rng.sample(mid, min(cfg.n_mid, len(mid)))
    report.drop(source, "not selected (OpenR1 long/mid-accuracy sample)", len(ds) - len(taken) - len(chosen_mid))
    report.step(f"{source}: sample", len(ds), len(taken) + len(chosen_mid), long=len(chosen_long),
                mid=len(chosen_mid), long_candidates=len(long_ok), mid_candidates=len(mid))
    import datasets

    long_rows = measured.select([k for k, i in enumerate(cand_long) if i in taken])  # already measured
    mid_rows = with_trace_columns(ds.select(sorted(chosen_mid)))
    return datasets.concatenate_datasets([long_rows, mid_rows])


def dedup(ds: Any, report: BuildReport, key_of: Any = normalise_text, prefer_short: bool = True) -> Any:
    """One row per normalised problem text: the one with the shortest trace (then the first)."""
    keys = [key_of(p) for p in ds["problem"]]
    lengths = ds["trace_tokens"] if prefer_short and "trace_tokens" in ds.column_names else [0] * len(ds)
    best: dict[str, int] = {}
    for i, (k, n) in enumerate(zip(keys, lengths)):
        j = best.get(k)
        if j is None or n < lengths[j]:
            best[k] = i
    keep = sorted(best.values())
    kept = Counter(ds.select(keep)["source"])
    for source, n in Counter(ds["source"]).items():
        report.drop(source, "duplicate", n - kept.get(source, 0))
    return ds.select(keep)


def decontaminate(ds: Any, index: NgramIndex, report: BuildReport, num_proc: int = 1,
                  min_overlap: float = 0.0) -> Any:
    """Drop rows sharing word n-grams with a benchmark problem (see ``first_match`` for ``min_overlap``);
    report each with the item it matched."""

    def fn(batch: dict[str, list]) -> dict[str, list]:
        hits = [first_match(p, index, min_overlap) for p in batch["problem"]]
        return {"_match": [h[0] if h else "" for h in hits], "_gram": [h[1] if h else "" for h in hits]}

    marked = ds.map(fn, batched=True, num_proc=num_proc, desc="decontaminate")
    for src, prob, m, g in zip(marked["source"], marked["problem"], marked["_match"], marked["_gram"]):
        if m:
            report.drop(src, "contaminated", 1)
            report.contaminated.append({"source": src, "problem": prob[:200], "matched": m, "ngram": g})
    kept = marked.filter(lambda ms: [not m for m in ms], input_columns=["_match"], batched=True)
    return kept.remove_columns(["_match", "_gram"])


def drop_too_long(ds: Any, max_tokens: int | None, report: BuildReport) -> Any:
    """Drop rows whose kept trace has more than ``max_tokens`` tokens (None: keep all), counted per source."""
    report.max_tokens = max_tokens
    if max_tokens is None:
        return ds
    too_long = [(s, t) for s, t in zip(ds["source"], ds["trace_tokens"]) if t > max_tokens]
    for s, _ in too_long:
        report.drop(s, "too long", 1)
    report.too_long += [t for _, t in too_long]
    return ds.filter(lambda ts: [t <= max_tokens for t in ts], input_columns=["trace_tokens"], batched=True)


def build_sets(
    sft_parts: list[tuple[str, Any]],
    grpo_parts: list[tuple[str, Any]],
    benchmarks: dict[str, list[dict[str, Any]]],
    tokenizer: Any,
    cfg: BuildConfig,
    system_prompt: str | None,
    report: BuildReport,
) -> tuple[Any, Any | None]:
    """Merge normalised SFT sources, keep the shortest correct trace per problem, dedup, decontaminate,
    length-filter; and the GRPO sources' problems, merged (dedup, decontaminate). Returns (sft rows, grpo rows) as
    TRL rows, None for a set without sources."""
    import datasets

    report.system_prompt = system_prompt or None
    index = build_index(benchmarks, cfg.ngram)
    merged = datasets.concatenate_datasets([with_trace_columns(p) for _, p in sft_parts]) if sft_parts else None
    sft = None
    if merged is not None:
        n0 = len(merged)
        merged = shortest_traces(merged, tokenizer, cfg.map_batch_size, cfg.num_proc)
        merged = dedup(merged, report)
        report.step("merge + dedup (shortest correct trace kept)", n0, len(merged))
        n1 = len(merged)
        merged = decontaminate(merged, index, report, cfg.num_proc, cfg.min_overlap)
        report.step(f"decontaminate ({cfg.ngram}-grams vs {', '.join(benchmarks) or 'nothing'})", n1, len(merged))
        n2 = len(merged)
        merged = drop_too_long(merged, cfg.max_tokens, report)
        if cfg.max_tokens is not None:
            report.step(f"length <= {cfg.max_tokens} tokens", n2, len(merged))
        sft = merged.map(
            lambda b: {"messages": [build_messages(p, system_prompt) + [{"role": "assistant", "content": t}]
                                    for p, t in zip(b["problem"], b["trace"])]},
            batched=True, remove_columns=[c for c in merged.column_names
                                          if c not in ("source", "answer", "trace_tokens")],
            desc="SFT rows",
        )
    grpo = None
    if grpo_parts:
        parts = []
        for name, g in grpo_parts:
            name = f"{name} (GRPO problems)"
            parts.append(register(report, name, g.map(lambda b, n=name: {"source": [n] * len(b["source"])},
                                                      batched=True)))
        name = ", ".join(p for p, _ in grpo_parts) + " (GRPO problems)"
        g = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        n0 = len(g)
        g = dedup(g, report, prefer_short=False)
        g = decontaminate(g, index, report, cfg.num_proc, cfg.min_overlap)
        report.step(f"{name}: dedup + decontaminate", n0, len(g))
        grpo = g.map(lambda b: {"prompt": [build_messages(p, system_prompt) for p in b["problem"]]},
                     batched=True, remove_columns=[c for c in g.column_names if c not in ("source", "answer")],
                     desc="GRPO rows")
    return sft, grpo


def write_outputs(out: Path, sft: Any, grpo: Any, report: BuildReport, extra: dict[str, Any],
                  sft_max_length: int | None = None) -> dict[str, Any]:
    """Save the sets (each with its metadata: the system prompt) and data_report.{json,md,png}, all atomically.
    ``sft_max_length`` (the recipe's sft.max_length) is the length the report counts traces over."""
    out.mkdir(parents=True, exist_ok=True)
    lengths = list(sft["trace_tokens"]) if sft is not None else []
    meta = {"system_prompt": report.system_prompt, "built_by": f"mathrecipe {__version__} data build"}
    if sft is not None:
        save_dataset(sft, out / "sft", {**meta, "set": "sft"})
    if grpo is not None:
        save_dataset(grpo, out / "grpo", {**meta, "set": "grpo"})
    data = {
        **extra,
        "system_prompt": report.system_prompt,
        "sft_rows": len(sft) if sft is not None else 0,
        "grpo_rows": len(grpo) if grpo is not None else 0,
        "sources": report.sources,
        "steps": report.steps,
        "contaminated": report.contaminated,
        "trace_tokens": length_stats(lengths),
        "length_check": length_check(lengths, report, sft_max_length),
        "outputs": {"sft": str(out / "sft") if sft is not None else None,
                    "grpo": str(out / "grpo") if grpo is not None else None},
    }
    write_data_report(out, data, lengths, report.too_long)
    return data


def check_inputs(recipe: Recipe) -> Path | str:
    """Resolve every source and the tokenizer before anything loads: an unknown kind, a missing path or an
    unreachable hub stops the build in seconds with one line naming the recipe key. Returns the tokenizer's path
    or hub id."""
    cfg = recipe.data.build
    for i, src in enumerate(cfg.sources):
        key = f"data.build.sources[{i}]"
        if src.kind not in SOURCES:
            raise RecipeError(f"{key}.kind: unknown source kind {src.kind!r}; known: {', '.join(SOURCES)} (a new kind "
                              "is a normaliser registered in mathrecipe.data.sources.SOURCES)")
        resolve(src.path, f"{key}.path", f"Set {key}.path to a local .jsonl/.json/.parquet file or a saved dataset "
                "folder in the source's schema (or leave the source out).")
    if cfg.benchmark_dir:
        resolve(cfg.benchmark_dir, "data.build.benchmark_dir", "Set it to a folder of benchmark JSONL files.")
    key = "data.build.tokenizer" if cfg.tokenizer else "model.name_or_path"
    name = cfg.tokenizer or recipe.model.name_or_path
    if name == "toy":
        raise RecipeError("data.build.tokenizer: the toy model has no tokenizer before its data exists; "
                         "set data.build.tokenizer to a tokenizer folder or hub id")
    return resolve(name, key, "Set data.build.tokenizer to a local tokenizer or model folder.")


def build(recipe: Recipe) -> dict[str, Any]:
    """Build both sets from the recipe's table of sources (hub ids or local files) into ``data.build.output_dir``:
    each source is read, normalised by its kind, counted, filtered by its sample, and fed to the sets it names."""
    cfg = recipe.data.build
    tok_name = check_inputs(recipe)  # before the slow imports: a wrong path fails in about a second
    from transformers import AutoTokenizer

    from mathrecipe.data.benchmarks import load_benchmark

    benchmarks = dict(load_benchmark(b, cfg.benchmark_dir) for b in cfg.decontaminate)
    from mathrecipe.modeling import converted_gguf, find_gguf

    gguf = find_gguf(tok_name) if isinstance(tok_name, Path) else None  # a GGUF model: its converted folder
    tokenizer = AutoTokenizer.from_pretrained(str(converted_gguf(gguf) if gguf else tok_name))
    report = BuildReport()
    sft_parts: list[tuple[str, Any]] = []
    grpo_parts: list[tuple[str, Any]] = []
    for i, src in enumerate(cfg.sources):
        name = src.name or src.kind
        raw = load_source(src.path, src.split, src.data_files, what=f"data.build.sources[{i}].path")
        with dataset_bars(len(raw)):
            ds = register(report, name, SOURCES[src.kind](raw, name, cfg.num_proc, cfg.map_batch_size))
            if src.sft:
                sft_parts.append((name, ds if src.sample is None else select_sample(
                    ds, src.sample, tokenizer, recipe.seed, report, name, cfg.map_batch_size, cfg.num_proc)))
            if src.grpo:
                grpo_parts.append((name, ds.remove_columns(["generations"])))
    with dataset_bars(sum(len(ds) for _, ds in sft_parts + grpo_parts)):
        sft, grpo = build_sets(sft_parts, grpo_parts, benchmarks, tokenizer, cfg, recipe.data.system_prompt, report)
        return write_outputs(Path(cfg.output_dir), sft, grpo, report,
                             {"tokenizer": str(tok_name), "ngram": cfg.ngram, "min_overlap": cfg.min_overlap,
                              "benchmarks": list(benchmarks)},
                             sft_max_length=recipe.sft.max_length if recipe.sft.enabled else None)
