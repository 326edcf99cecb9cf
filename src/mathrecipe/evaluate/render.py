"""Views of summaries: the Markdown table of ``mathrecipe eval`` and accuracy-vs-token-budget plots."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mathrecipe.files import atomic_write_text


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def summary_markdown(summaries: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any]) -> str:
    """A table like the paper's: pass@1 (mean over the samples) with its 95 % CI, maj@n, pass@n, tokens, budgets."""
    budgets = sorted({int(b) for s in summaries.values() for b in s.get("budgets", {})})
    s_cfg = config["sampling"]
    head = ["benchmark", "problems", "samples", "pass@1", "95% CI", "maj@n", "pass@n", "mean tokens",
            "mean tokens (correct)", "truncated"] + [f"acc @{b}" for b in budgets]
    lines = [f"# Evaluation of `{config['model']}`", "",
             f"{config['backend']} backend; temperature {s_cfg['temperature']}, top_p {s_cfg['top_p']}"
             f"{'' if not s_cfg.get('min_p') else ', min_p ' + str(s_cfg['min_p'])}, "
             f"max new tokens {s_cfg['max_new_tokens']}, seed {s_cfg['seed']}"
             f"{', stop at </think>' if s_cfg['stop_at_think'] else ''}. Accuracies in %; n = samples per problem; "
             "acc @B: the last boxed answer complete within B tokens.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summaries.items():
        n = str(s["samples"])
        cells = [name, str(s["n_problems"]), n, pct(s["accuracy"]), f"{pct(s['ci95'][0])}–{pct(s['ci95'][1])}",
                 pct(s.get("maj@k", {}).get(n)), pct(s.get("pass@k", {}).get(n)), f"{s['mean_tokens']:.0f}",
                 "–" if s["mean_tokens_correct"] is None else f"{s['mean_tokens_correct']:.0f}",
                 pct(s["truncation_rate"])]
        cells += [pct(s.get("budgets", {}).get(str(b))) for b in budgets]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_budget_curves(panels: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], path: str | Path,
                       title: str = "Accuracy vs token budget") -> None:
    """One panel per key of ``panels``, one line per curve (label -> [(budget, accuracy), ...]); a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items()):
        for label, pts in curves.items():
            pts = sorted(pts)
            if len(pts) > 12:  # a dense grid: accuracy changes only where a box closes, a step function
                ax.plot([b for b, _ in pts], [a for _, a in pts], "-", label=label, drawstyle="steps-post")
            elif pts:  # a few chosen budgets: points, joined
                ax.plot([b for b, _ in pts], [a for _, a in pts], "o-", label=label)
        ax.set_xlabel("token budget")
        ax.set_ylabel("accuracy (pass@1)")
        ax.set_ylim(0, 1)
        ax.set_title(name or title)
        ax.legend(fontsize=8)
    if len(panels) > 1:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_text(path, buf.getvalue())
