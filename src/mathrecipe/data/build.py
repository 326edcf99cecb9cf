"""``mathrecipe data build``: the stage-1 SFT set and the stage-2 GRPO set, decontaminated, with a data report.

recipe -> sources (hub or local) -> normalise -> OpenR1 sampling -> shortest correct trace (tokens) -> merge ->
dedup -> decontaminate -> length filter -> TRL conversational rows (saved with ``datasets``) -> data_report.

Every dropped row is counted under its reason; nothing is lost silently. Token lengths are counted in batches with
the fast tokenizer and only the lengths are kept (never all traces' token ids at once).
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from mathrecipe.data.decontam import build_index, first_match, normalise_text
from mathrecipe.data.sources import (
    load_source,
    normalise_light_r1,
    normalise_openr1,
)
from mathrecipe.prompts import build_messages
from mathrecipe.recipe import BuildConfig, Recipe, RecipeError

log = logging.getLogger(__name__)


class BuildReport:
    """Rows in and out per source and per step, drops by reason, contamination matches."""

    def __init__(self) -> None:
        self.sources: dict[str, dict[str, Any]] = {}
        self.steps: list[dict[str, Any]] = []
        self.contaminated: list[dict[str, str]] = []

    def source(self, name: str, rows_in: int) -> None:
        self.sources[name] = {"rows_in": rows_in, "dropped": {}, "rows_out": rows_in}

    def drop(self, name: str, reason: str, n: int) -> None:
        if n:
            s = self.sources[name]
            s["dropped"][reason] = s["dropped"].get(reason, 0) + n
            s["rows_out"] -= n

    def step(self, name: str, rows_in: int, rows_out: int, **extra: Any) -> None:
        self.steps.append({"step": name, "rows_in": rows_in, "rows_out": rows_out, "dropped": rows_in - rows_out,
                           **extra})


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


def select_openr1(ds: Any, cfg: BuildConfig, tokenizer: Any, seed: int, report: BuildReport, source: str) -> Any:
    """The paper's OpenR1 sample: n_long long traces with accuracy > long_min_accuracy, plus n_mid with accuracy
    in [mid_min, mid_max] (drawn from the rest). A trace is long when its kept (shortest correct) trace has more than
    long_min_tokens tokens; tokens <= bytes, so only rows whose smallest correct trace has that many bytes are
    tokenized for the test."""
    rng = random.Random(seed)
    acc = ds["accuracy"]
    min_bytes = ds["min_bytes"]
    cand_long = [i for i, (a, b) in enumerate(zip(acc, min_bytes))
                 if a > cfg.long_min_accuracy and b > cfg.long_min_tokens]
    measured = shortest_traces(ds.select(cand_long), tokenizer, cfg.batch_size, cfg.num_proc)
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


def decontaminate(ds: Any, index: dict[str, str], n: int, report: BuildReport, num_proc: int = 1,
                  min_overlap: float = 0.0) -> Any:
    """Drop rows sharing a word n-gram with a benchmark problem (see ``first_match`` for ``min_overlap``);
    report each with the item it matched."""

    def fn(batch: dict[str, list]) -> dict[str, list]:
        hits = [first_match(p, index, n, min_overlap) for p in batch["problem"]]
        return {"_match": [h[0] if h else "" for h in hits], "_gram": [h[1] if h else "" for h in hits]}

    marked = ds.map(fn, batched=True, num_proc=num_proc, desc="decontaminate")
    for src, prob, m, g in zip(marked["source"], marked["problem"], marked["_match"], marked["_gram"]):
        if m:
            report.drop(src, "contaminated", 1)
            report.contaminated.append({"source": src, "problem": prob[:200], "matched": m, "ngram": g})
    kept = marked.filter(lambda ms: [not m for m in ms], input_columns=["_match"], batched=True)
    return kept.remove_columns(["_match", "_gram"])


def build_sets(
    sft_parts: list[tuple[str, Any]],
    grpo_part: tuple[str, Any] | None,
    benchmarks: dict[str, list[dict[str, Any]]],
    tokenizer: Any,
    cfg: BuildConfig,
    system_prompt: str | None,
    report: BuildReport,
) -> tuple[Any, Any | None]:
    """Merge normalised SFT sources, keep the shortest correct trace per problem, dedup, decontaminate,
    length-filter; and the GRPO problems (dedup, decontaminate). Returns (sft rows, grpo rows) as TRL rows."""
    import datasets

    index = build_index(benchmarks, cfg.ngram)
    merged = datasets.concatenate_datasets([with_trace_columns(p) for _, p in sft_parts]) if sft_parts else None
    sft = None
    if merged is not None:
        n0 = len(merged)
        merged = shortest_traces(merged, tokenizer, cfg.batch_size, cfg.num_proc)
        merged = dedup(merged, report)
        report.step("merge + dedup (shortest correct trace kept)", n0, len(merged))
        n1 = len(merged)
        merged = decontaminate(merged, index, cfg.ngram, report, cfg.num_proc, cfg.min_overlap)
        report.step(f"decontaminate ({cfg.ngram}-grams vs {', '.join(benchmarks) or 'nothing'})", n1, len(merged))
        if cfg.max_tokens is not None:
            n2 = len(merged)
            too_long = [s for s, t in zip(merged["source"], merged["trace_tokens"]) if t > cfg.max_tokens]
            for s in too_long:
                report.drop(s, "too long", 1)
            merged = merged.filter(lambda ts: [t <= cfg.max_tokens for t in ts], input_columns=["trace_tokens"],
                                   batched=True)
            report.step(f"length <= {cfg.max_tokens} tokens", n2, len(merged))
        sft = merged.map(
            lambda b: {"messages": [build_messages(p, system_prompt) + [{"role": "assistant", "content": t}]
                                    for p, t in zip(b["problem"], b["trace"])]},
            batched=True, remove_columns=[c for c in merged.column_names
                                          if c not in ("source", "answer", "trace_tokens")],
            desc="SFT rows",
        )
    grpo = None
    if grpo_part is not None:
        name, g = grpo_part
        name = f"{name} (GRPO problems)"
        g = register(report, name, g.map(lambda b: {"source": [name] * len(b["source"])}, batched=True))
        n0 = len(g)
        g = dedup(g, report, prefer_short=False)
        g = decontaminate(g, index, cfg.ngram, report, cfg.num_proc, cfg.min_overlap)
        report.step(f"{name}: dedup + decontaminate", n0, len(g))
        grpo = g.map(lambda b: {"prompt": [build_messages(p, system_prompt) for p in b["problem"]]},
                     batched=True, remove_columns=[c for c in g.column_names if c not in ("source", "answer")],
                     desc="GRPO rows")
    return sft, grpo


def length_stats(lengths: list[int]) -> dict[str, Any]:
    if not lengths:
        return {"count": 0}
    s = sorted(lengths)
    return {"count": len(s), "min": s[0], "median": statistics.median(s), "mean": statistics.fmean(s),
            "p90": s[min(len(s) - 1, int(0.9 * len(s)))], "max": s[-1]}


def write_outputs(out: Path, sft: Any, grpo: Any, report: BuildReport, extra: dict[str, Any]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    lengths = list(sft["trace_tokens"]) if sft is not None else []
    if sft is not None:
        sft.save_to_disk(str(out / "sft"))
    if grpo is not None:
        grpo.save_to_disk(str(out / "grpo"))
    data = {
        **extra,
        "sft_rows": len(sft) if sft is not None else 0,
        "grpo_rows": len(grpo) if grpo is not None else 0,
        "sources": report.sources,
        "steps": report.steps,
        "contaminated": report.contaminated,
        "trace_tokens": length_stats(lengths),
        "outputs": {"sft": str(out / "sft") if sft is not None else None,
                    "grpo": str(out / "grpo") if grpo is not None else None},
    }
    (out / "data_report.json").write_text(json.dumps(data, indent=2))
    (out / "data_report.md").write_text(_markdown(data))
    if lengths:
        _histogram(lengths, out / "data_report.png")
    return data


def _markdown(d: dict[str, Any]) -> str:
    lines = ["# Data report", "", f"SFT rows: **{d['sft_rows']}**, GRPO rows: **{d['grpo_rows']}**.", "",
             "## Per source", "", "| source | rows in | dropped (by reason) | rows out |", "|---|---:|---|---:|"]
    for name, s in d["sources"].items():
        why = "; ".join(f"{r}: {n}" for r, n in s["dropped"].items()) or "–"
        lines.append(f"| {name} | {s['rows_in']} | {why} | {s['rows_out']} |")
    lines += ["", "## Steps", "", "| step | rows in | rows out | dropped |", "|---|---:|---:|---:|"]
    for s in d["steps"]:
        lines.append(f"| {s['step']} | {s['rows_in']} | {s['rows_out']} | {s['dropped']} |")
    lines += ["", f"## Contaminated rows dropped: {len(d['contaminated'])}", ""]
    for c in d["contaminated"][:200]:
        lines.append(f"- [{c['source']}] matched **{c['matched']}** on “{c['ngram']}”: {c['problem'][:100]}")
    t = d["trace_tokens"]
    if t.get("count"):
        lines += ["", "## Kept trace lengths (tokens)", "",
                  f"min {t['min']}, median {t['median']:.0f}, mean {t['mean']:.0f}, p90 {t['p90']}, max {t['max']}"]
    return "\n".join(lines) + "\n"


def _histogram(lengths: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(lengths, bins=50, color="tab:blue")
    ax.set_xlabel("kept trace length (tokens)")
    ax.set_ylabel("rows")
    ax.set_title("SFT traces: token lengths")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build(recipe: Recipe) -> dict[str, Any]:
    """Build both sets from the recipe's sources (hub ids or local files) into ``data.build.output_dir``."""
    from transformers import AutoTokenizer

    from mathrecipe.data.benchmarks import load_benchmark

    cfg = recipe.data.build
    tok_name = cfg.tokenizer or recipe.model.name_or_path
    if tok_name == "toy":
        raise RecipeError("data.build.tokenizer: the toy model has no tokenizer before its data exists; "
                         "set data.build.tokenizer to a tokenizer folder or hub id")
    tokenizer = AutoTokenizer.from_pretrained(tok_name)
    report = BuildReport()
    parts: list[tuple[str, Any]] = []
    grpo_part = None

    if cfg.openr1:
        ds = register(report, "openr1", normalise_openr1(load_source(cfg.openr1, cfg.openr1_split), "openr1", cfg.num_proc,
                                             cfg.batch_size))
        parts.append(("openr1", select_openr1(ds, cfg, tokenizer, recipe.seed, report, "openr1")))
    if cfg.openr1_hard:
        parts.append(("openr1_hard", register(report, "openr1_hard", normalise_openr1(
            load_source(cfg.openr1_hard, cfg.openr1_hard_split), "openr1_hard", cfg.num_proc, cfg.batch_size))))
    if cfg.light_r1:
        files = None if Path(cfg.light_r1).exists() else cfg.light_r1_file
        light = register(report, "light_r1", normalise_light_r1(load_source(cfg.light_r1, "train", files), "light_r1",
                                                     cfg.num_proc, cfg.batch_size))
        parts.append(("light_r1", light))
        grpo_part = ("light_r1", light.remove_columns(["generations"]))
    benchmarks = dict(load_benchmark(b, cfg.benchmark_dir) for b in cfg.decontaminate)
    sft, grpo = build_sets(parts, grpo_part, benchmarks, tokenizer, cfg, recipe.data.system_prompt, report)
    return write_outputs(Path(cfg.output_dir), sft, grpo, report,
                         {"tokenizer": tok_name, "ngram": cfg.ngram, "benchmarks": list(benchmarks)})
