"""What a run produced: ``report.json`` first; ``report.md`` and ``report.png`` are rendered from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def render_markdown(report: dict[str, Any]) -> str:
    ev = report.get("eval", {})
    lines = ["# mathrecipe run report", ""]
    lines.append(
        f"Held-out problems: {ev.get('n_problems', '?')}, samples per problem: {ev.get('samples_per_problem', '?')} "
        f"(temperature {ev.get('temperature', '?')}); accuracy = mean pass@1 over samples."
    )
    sft = report.get("sft")
    if sft:
        lines += ["", "## Stage 1: SFT, per epoch", "", "| epoch | accuracy | mean tokens |", "|---:|---:|---:|"]
        for e in sft["epochs"]:
            mark = " (selected)" if e["epoch"] == sft.get("selected_epoch") else ""
            lines.append(f"| {e['epoch']}{mark} | {_fmt(e.get('accuracy'))} | {_fmt(e.get('mean_tokens'), '.1f')} |")
    base, grpo = report.get("start"), report.get("grpo")
    if grpo:
        lines += ["", "## Stage 2: GRPO", "", "| model | accuracy | mean tokens | mean tokens (correct) |",
                  "|---|---:|---:|---:|"]
        if base:
            lines.append(f"| {base['name']} | {_fmt(base.get('accuracy'))} | {_fmt(base.get('mean_tokens'), '.1f')} | "
                         f"{_fmt(base.get('mean_tokens_correct'), '.1f')} |")
        lines.append(f"| after GRPO ({grpo['steps']} steps) | {_fmt(grpo.get('accuracy'))} | "
                     f"{_fmt(grpo.get('mean_tokens'), '.1f')} | {_fmt(grpo.get('mean_tokens_correct'), '.1f')} |")
        if base and base.get("mean_tokens"):
            ratio = grpo["mean_tokens"] / base["mean_tokens"]
            delta = grpo["accuracy"] - base["accuracy"]
            lines += ["", f"Tokens after / before GRPO: **{ratio:.2f}x**; accuracy change: **{delta:+.3f}**."]
        if grpo.get("stopped_early"):
            s = grpo["stopped_early"]
            lines.append(f"\nCollapse guard stopped GRPO at step {s['step']}: {s['reason']}.")
    return "\n".join(lines) + "\n"


def render_png(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    sft = report.get("sft")
    if sft and any("accuracy" in e for e in sft["epochs"]):
        ep = [e["epoch"] for e in sft["epochs"] if "accuracy" in e]
        ax1.plot(ep, [e["accuracy"] for e in sft["epochs"] if "accuracy" in e], "o-", color="tab:blue")
        ax1.set_ylim(0, 1)
        ax1.set_xlabel("SFT epoch")
        ax1.set_ylabel("held-out accuracy", color="tab:blue")
        twin = ax1.twinx()
        twin.plot(ep, [e["mean_tokens"] for e in sft["epochs"] if "accuracy" in e], "s--", color="tab:orange")
        twin.set_ylabel("mean completion tokens", color="tab:orange")
        ax1.set_title("Stage 1: SFT")
    else:
        ax1.set_axis_off()
    base, grpo = report.get("start"), report.get("grpo")
    if grpo and base:
        names = [base["name"], "after GRPO"]
        ax2.bar([0, 1], [base["accuracy"], grpo["accuracy"]], width=0.35, color="tab:blue", label="accuracy")
        ax2.set_ylim(0, 1.15)  # headroom for the legend
        ax2.set_ylabel("accuracy")
        tw = ax2.twinx()
        tw.bar([0.4, 1.4], [base["mean_tokens"], grpo["mean_tokens"]], width=0.35, color="tab:orange",
               label="mean tokens")
        tw.set_ylabel("mean completion tokens")
        tw.set_ylim(0, 1.15 * max(base["mean_tokens"], grpo["mean_tokens"]))
        ax2.set_xticks([0.2, 1.2], names)
        ax2.set_title("Stage 2: GRPO (accuracy, tokens)")
        handles = ax2.get_legend_handles_labels()[0] + tw.get_legend_handles_labels()[0]
        ax2.legend(handles, ["accuracy", "mean tokens"], loc="upper right")
    else:
        ax2.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render_markdown(report))
    render_png(report, out / "report.png")
    return out / "report.json"
