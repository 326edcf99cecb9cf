"""``mathrecipe data build``: the stage-1 SFT set and the stage-2 GRPO set, decontaminated, with a data report.

recipe -> sources (hub or local, checked before anything loads) -> normalise -> OpenR1 sampling -> shortest correct
trace (tokens) -> merge -> dedup -> decontaminate -> length filter -> TRL conversational rows (saved with
``datasets``, with the system prompt in their metadata) -> data_report.

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

from mathrecipe import __version__
from mathrecipe.data.decontam import NgramIndex, build_index, first_match, normalise_text
from mathrecipe.data.io import save_dataset
from mathrecipe.data.sources import (
    load_source,
    normalise_light_r1,
    normalise_openr1,
)
from mathrecipe.files import atomic_write, atomic_write_text
from mathrecipe.hub import resolve
from mathrecipe.prompts import build_messages
from mathrecipe.recipe import BuildConfig, Recipe, RecipeError

log = logging.getLogger(__name__)

# Context lengths SFT runs commonly train at: the report says how many kept traces exceed each, so a trace that SFT
# would refuse at a given sft.max_length is visible even when data.build.max_tokens is null.
SFT_LENGTHS = (4096, 8192, 16384, 32768)


class BuildReport:
    """Rows in and out per source and per step, drops by reason, contamination matches."""

    def __init__(self) -> None:
        self.sources: dict[str, dict[str, Any]] = {}
        self.steps: list[dict[str, Any]] = []
        self.contaminated: list[dict[str, str]] = []
        self.system_prompt: str | None = None  # the one the rows were built with (build_sets sets it)
        self.max_tokens: int | None = None
        self.too_long: list[int] = []  # token lengths of the traces dropped as longer than max_tokens

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

    report.system_prompt = system_prompt or None
    index = build_index(benchmarks, cfg.ngram)
    merged = datasets.concatenate_datasets([with_trace_columns(p) for _, p in sft_parts]) if sft_parts else None
    sft = None
    if merged is not None:
        n0 = len(merged)
        merged = shortest_traces(merged, tokenizer, cfg.batch_size, cfg.num_proc)
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
    if grpo_part is not None:
        name, g = grpo_part
        name = f"{name} (GRPO problems)"
        g = register(report, name, g.map(lambda b: {"source": [name] * len(b["source"])}, batched=True))
        n0 = len(g)
        g = dedup(g, report, prefer_short=False)
        g = decontaminate(g, index, report, cfg.num_proc, cfg.min_overlap)
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


def length_check(kept: list[int], report: BuildReport, sft_max_length: int | None) -> dict[str, Any]:
    """How many kept traces exceed each common SFT length and ``sft.max_length`` (those SFT refuses before
    training: the trace alone is longer, the prompt adds more), and how many were dropped as longer than
    ``max_tokens``."""
    limits = sorted({*SFT_LENGTHS, *([sft_max_length] if sft_max_length else [])})
    return {"max_tokens": report.max_tokens, "dropped_too_long": len(report.too_long),
            "sft_max_length": sft_max_length,
            "over_sft_max_length": sum(t > sft_max_length for t in kept) if sft_max_length else None,
            "over": {str(n): sum(t > n for t in kept) for n in limits}}


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
    atomic_write_text(out / "data_report.json", json.dumps(data, indent=2))
    atomic_write_text(out / "data_report.md", _markdown(data))
    if lengths or report.too_long:
        atomic_write(out / "data_report.png", lambda tmp: _histogram(lengths, report.too_long, data["length_check"],
                                                                     tmp))
    return data


def _markdown(d: dict[str, Any]) -> str:
    lines = ["# Data report", "", f"SFT rows: **{d['sft_rows']}**, GRPO rows: **{d['grpo_rows']}**.", "",
             f"System prompt (saved with both sets): {json.dumps(d['system_prompt'], ensure_ascii=False)}", "",
             "## Per source", "", "| source | rows in | dropped (by reason) | rows out |", "|---|---:|---|---:|"]
    for name, s in d["sources"].items():
        why = "; ".join(f"{r}: {n}" for r, n in s["dropped"].items()) or "–"
        lines.append(f"| {name} | {s['rows_in']} | {why} | {s['rows_out']} |")
    lines += ["", "## Steps", "", "| step | rows in | rows out | dropped |", "|---|---:|---:|---:|"]
    for s in d["steps"]:
        lines.append(f"| {s['step']} | {s['rows_in']} | {s['rows_out']} | {s['dropped']} |")
    lines += ["", f"## Contaminated rows dropped: {len(d['contaminated'])}", ""]
    for c in d["contaminated"][:200]:
        lines.append(f"- [{c['source']}] matched **{c['matched']}** on “{c['ngram']}”: {' '.join(c['problem'][:100].split())}")
    t, c = d["trace_tokens"], d["length_check"]
    lines += ["", "## Kept trace lengths (tokens)", ""]
    if t.get("count"):
        lines += [f"min {t['min']}, median {t['median']:.0f}, mean {t['mean']:.0f}, p90 {t['p90']}, max {t['max']}",
                  ""]
    lines.append("Kept traces longer than: " + ", ".join(f"{int(n):,}: **{k}**" for n, k in c["over"].items()) + ".")
    if c["sft_max_length"]:
        lines.append(f"Longer than sft.max_length={c['sft_max_length']:,} (the prompt adds more): "
                     f"**{c['over_sft_max_length']}**. SFT refuses a set holding any such row before training "
                     "(truncation would cut off their answers) unless sft.packing splits long rows (sft.extra.packing_strategy "
                     "wrapped or bfd_split); set data.build.max_tokens to drop them here, or raise sft.max_length.")
    if c["max_tokens"] is None:
        lines.append("data.build.max_tokens is null: no trace was dropped for its length.")
    else:
        lines.append(f"Dropped as longer than data.build.max_tokens={c['max_tokens']:,}: **{c['dropped_too_long']}**.")
    return "\n".join(lines) + "\n"


def _histogram(kept: list[int], too_long: list[int], check: dict[str, Any], path: Path) -> None:
    """Token lengths of the kept traces and of those dropped as too long, with the max_tokens and sft.max_length
    limits marked (in the legend with their counts, drawn when they fall inside the plotted range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    series = [(kept, "tab:blue", f"kept: {len(kept)}"), (too_long, "tab:gray", f"dropped, > max_tokens: {len(too_long)}")]
    series = [x for x in series if x[0]]
    ax.hist([x[0] for x in series], bins=50, stacked=True, color=[x[1] for x in series], label=[x[2] for x in series])
    top = max(kept + too_long)
    handles, _ = ax.get_legend_handles_labels()
    limits = [("data.build.max_tokens", check["max_tokens"], f"{len(too_long)} dropped", "black", ":"),
              ("sft.max_length", check["sft_max_length"], f"{check['over_sft_max_length']} kept traces over",
               "tab:red", "--")]
    for name, value, count, color, style in limits:
        if value is None:
            continue
        label = f"{name}={value:,}: {count}" + ("" if value <= top * 1.05 else " (off the chart)")
        if value <= top * 1.05:
            ax.axvline(value, color=color, linestyle=style)
        handles.append(Line2D([], [], color=color, linestyle=style, label=label))
    ax.legend(handles=handles, fontsize=8)
    ax.set_xlabel("trace length (tokens)")
    ax.set_ylabel("rows")
    ax.set_title("SFT traces: token lengths")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


SOURCE_KEYS = ("openr1", "openr1_hard", "light_r1")


def check_inputs(recipe: Recipe) -> Path | str:
    """Resolve every source and the tokenizer before anything loads: a missing path or an unreachable hub stops
    the build in seconds with one line naming the recipe key. Returns the tokenizer's path or hub id."""
    cfg = recipe.data.build
    for key in SOURCE_KEYS:
        if getattr(cfg, key):
            resolve(getattr(cfg, key), f"data.build.{key}", f"Set data.build.{key} to a local .jsonl/.json/.parquet "
                    "file or a saved dataset folder in the source's schema (null: leave the source out).")
    if cfg.benchmark_dir:
        resolve(cfg.benchmark_dir, "data.build.benchmark_dir", "Set it to a folder of benchmark JSONL files.")
    key = "data.build.tokenizer" if cfg.tokenizer else "model.name_or_path"
    name = cfg.tokenizer or recipe.model.name_or_path
    if name == "toy":
        raise RecipeError("data.build.tokenizer: the toy model has no tokenizer before its data exists; "
                         "set data.build.tokenizer to a tokenizer folder or hub id")
    return resolve(name, key, "Set data.build.tokenizer to a local tokenizer or model folder.")


def build(recipe: Recipe) -> dict[str, Any]:
    """Build both sets from the recipe's sources (hub ids or local files) into ``data.build.output_dir``."""
    cfg = recipe.data.build
    tok_name = check_inputs(recipe)  # before the slow imports: a wrong path fails in about a second
    from transformers import AutoTokenizer

    from mathrecipe.data.benchmarks import load_benchmark

    benchmarks = dict(load_benchmark(b, cfg.benchmark_dir) for b in cfg.decontaminate)
    from mathrecipe.modeling import converted_gguf, find_gguf

    gguf = find_gguf(tok_name) if isinstance(tok_name, Path) else None  # a GGUF model: its converted folder
    tokenizer = AutoTokenizer.from_pretrained(str(converted_gguf(gguf) if gguf else tok_name))
    report = BuildReport()
    parts: list[tuple[str, Any]] = []
    grpo_part = None

    if cfg.openr1:
        ds = register(report, "openr1", normalise_openr1(load_source(cfg.openr1, cfg.openr1_split,
                                                                     what="data.build.openr1"),
                                                         "openr1", cfg.num_proc, cfg.batch_size))
        parts.append(("openr1", select_openr1(ds, cfg, tokenizer, recipe.seed, report, "openr1")))
    if cfg.openr1_hard:
        hard = load_source(cfg.openr1_hard, cfg.openr1_hard_split, what="data.build.openr1_hard")
        parts.append(("openr1_hard", register(report, "openr1_hard", normalise_openr1(
            hard, "openr1_hard", cfg.num_proc, cfg.batch_size))))
    if cfg.light_r1:
        raw = load_source(cfg.light_r1, "train", cfg.light_r1_file, what="data.build.light_r1")
        light = register(report, "light_r1", normalise_light_r1(raw, "light_r1", cfg.num_proc, cfg.batch_size))
        parts.append(("light_r1", light))
        grpo_part = ("light_r1", light.remove_columns(["generations"]))
    sft, grpo = build_sets(parts, grpo_part, benchmarks, tokenizer, cfg, recipe.data.system_prompt, report)
    return write_outputs(Path(cfg.output_dir), sft, grpo, report,
                         {"tokenizer": str(tok_name), "ngram": cfg.ngram, "min_overlap": cfg.min_overlap,
                          "benchmarks": list(benchmarks)},
                         sft_max_length=recipe.sft.max_length if recipe.sft.enabled else None)
