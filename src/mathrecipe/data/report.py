"""The data build's report: rows in and out per source and per step, every drop by reason, contamination matches
and trace lengths. ``data_report.json`` is the record; ``data_report.md`` and ``data_report.png`` (the token-length
histogram) are views of it."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from mathrecipe.files import atomic_write, atomic_write_text

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


def write_data_report(out: Path, data: dict[str, Any], kept: list[int], too_long: list[int]) -> None:
    """data_report.json (``data``), .md and, when there are traces, .png (``kept``: the kept traces' token lengths,
    ``too_long``: those dropped as longer than max_tokens), each written atomically."""
    atomic_write_text(out / "data_report.json", json.dumps(data, indent=2))
    atomic_write_text(out / "data_report.md", _markdown(data))
    if kept or too_long:
        atomic_write(out / "data_report.png", lambda tmp: _histogram(kept, too_long, data["length_check"], tmp))


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
