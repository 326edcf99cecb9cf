"""``mathrecipe compare``: several evaluations side by side, with paired differences and overlaid budget curves.

An entry is one samples file: a ``mathrecipe eval`` folder gives one per benchmark it holds; a ``mathrecipe run``
folder gives its selected SFT epoch (``sft/eval-epoch{N}.samples.jsonl``), its start model when GRPO started
without SFT (``eval/start.samples.jsonl``) and its GRPO policy (``eval/grpo.samples.jsonl``); their rows carry no
benchmark, so they are the benchmark "test". Several runs whose GRPO started from one checkpoint (e.g. one
SFT model, several length-control methods or seeds) contribute that start model once, from the first of them. Each
entry is compared with the FIRST entry of its benchmark on the problems both hold: the mean of the per-problem
differences, with a seeded bootstrap 95 % CI over problems. ``pareto.png`` puts every entry at (mean tokens,
accuracy), coloured by its run's ``grpo.method``, with the entries no other beats on both (the Pareto front) joined.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathrecipe.errors import MathRecipeError
from mathrecipe.evaluate.metrics import accuracy_at_budgets, budget_grid, paired_bootstrap, summarize
from mathrecipe.evaluate.render import pct, plot_budget_curves
from mathrecipe.evaluate.samples import complete_rows, read_samples
from mathrecipe.files import atomic_write_text

TEST = "test"  # the benchmark name of a run's in-run samples (they carry none)
CURVE_POINTS = 40


@dataclass
class Entry:
    label: str
    source: str  # the samples file
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # benchmark -> rows of complete problems
    model: str | None = None  # a run's start model (its absolute path): one entry per start model
    group: str = ""  # what the Pareto plot colours by: a GRPO entry's grpo.method, "start" for a start model


def _identity(path: str) -> str:
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else path


def _method(run: Path) -> str:
    """The run's grpo.method from its recipe.yaml ("GRPO" when it has none)."""
    import yaml

    try:
        recipe = yaml.safe_load((run / "recipe.yaml").read_text()) or {}
        return str((recipe.get("grpo") or {}).get("method") or "GRPO")
    except (OSError, yaml.YAMLError, AttributeError):
        return "GRPO"


def _complete(rows: list[dict[str, Any]], name: str, samples: int | None, source: Path) -> list[dict[str, Any]]:
    for r in rows:
        r.setdefault("benchmark", name)
    if samples is None:  # a run's file: all of its problems were evaluated with the same count
        counts: dict[str, int] = {}
        for r in rows:
            counts[str(r["id"])] = counts.get(str(r["id"]), 0) + 1
        samples = max(counts.values(), default=0)
    kept, _ = complete_rows(rows, {name: samples})
    if not kept:
        raise MathRecipeError(f"{source}: no complete problem in it (an evaluation that never finished?)")
    return kept


def _eval_dir(d: Path) -> list[Entry]:
    cfg_path = d / "eval_config.json"
    if not cfg_path.is_file():
        raise MathRecipeError(f"{d}: samples.jsonl without eval_config.json; cannot tell its samples per problem")
    cfg = json.loads(cfg_path.read_text())
    if "benchmarks" not in cfg or "sampling" not in cfg:
        raise MathRecipeError(f"{cfg_path}: made by an older mathrecipe; rerun `mathrecipe eval` into a new --out")
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
    selected = {k: {str(i) for i in v} for k, v in summary.get("ids", {}).items()}
    rows = read_samples(d / "samples.jsonl").rows
    entry = Entry(label=d.name, source=str(d / "samples.jsonl"))
    for name, b in cfg["benchmarks"].items():
        if selected and name not in selected:  # summarised by the last run: only its benchmarks
            continue
        mine = [r for r in rows if r.get("benchmark") == name
                and (name not in selected or str(r["id"]) in selected[name])]
        if mine:
            entry.rows[name] = _complete(mine, name, b["samples"], d / "samples.jsonl")
    if not entry.rows:
        raise MathRecipeError(f"{d / 'samples.jsonl'}: no samples in it yet")
    return [entry]


def _run_dir(d: Path) -> list[Entry]:
    report = json.loads((d / "report.json").read_text())
    wanted: list[tuple[str, Path, str | None, str]] = []  # label, samples, start model, group
    sft = report.get("sft") or {}
    if sft.get("selected_epoch") is not None:
        n = sft["selected_epoch"]
        ckpt = sft.get("selected_checkpoint")
        wanted.append((f"SFT epoch {n}", d / "sft" / f"eval-epoch{n}.samples.jsonl",
                       _identity(ckpt) if ckpt else None, "start"))
    elif report.get("start") is not None:
        ckpt = report["start"].get("checkpoint")
        wanted.append((str(report["start"].get("name", "start")), d / "eval" / "start.samples.jsonl",
                       _identity(ckpt) if ckpt else None, "start"))
    if report.get("grpo") is not None:
        wanted.append(("GRPO", d / "eval" / "grpo.samples.jsonl", None, _method(d)))
    if not wanted:
        raise MathRecipeError(f"{d / 'report.json'}: no evaluated stage in it (sft.selected_epoch, start, grpo)")
    entries = []
    for label, path, model, group in wanted:
        if not path.is_file():
            raise MathRecipeError(f"{path}: missing, though {d / 'report.json'} lists that stage "
                                  "(was the run's evaluation turned off, e.g. sft.eval_each_epoch=false?)")
        entries.append(Entry(label, str(path), {TEST: _complete(read_samples(path).rows, TEST, None, path)},
                             model, group))
    return entries


def load_entries(dirs: Sequence[str | Path]) -> list[Entry]:
    """The entries of each folder, in order; labels get the folder's name when several folders are compared."""
    entries: list[Entry] = []
    for raw in dirs:
        d = Path(raw)
        if not d.exists():
            raise MathRecipeError(f"{d}: no such folder; give `mathrecipe eval --out` folders or run output folders")
        if not d.is_dir():
            raise MathRecipeError(f"{d}: a file, not a folder; give the folder that holds it")
        if (d / "report.json").is_file():
            seen = {e.model for e in entries if e.model}
            found = [e for e in _run_dir(d) if e.model is None or e.model not in seen]  # one entry per start model
        elif (d / "samples.jsonl").is_file():
            found = _eval_dir(d)
        else:
            raise MathRecipeError(f"{d}: neither a `mathrecipe eval` folder (samples.jsonl) nor a `mathrecipe run` "
                                  "folder (report.json)")
        if len(dirs) > 1:
            for e in found:
                e.label = d.name if e.label == d.name else f"{d.name}: {e.label}"
        entries.extend(found)
    labels = [e.label for e in entries]
    for e in entries:
        if labels.count(e.label) > 1:
            e.label = f"{e.label} ({e.source})"
    return entries


def signed(x: float, digits: int) -> str:
    """``x`` with ``digits`` decimals and its sign, where the sign means something: a difference that rounds to
    zero prints as 0 (``format(-0.3, "+.0f")`` is "-0", which reads as a loss)."""
    text = f"{x:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def _per_problem(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    acc: dict[str, list[float]] = {}
    for r in rows:
        acc.setdefault(str(r["id"]), []).append(float(r[key]))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def compare(dirs: Sequence[str | Path], out_dir: str | Path | None = None, seed: int = 0,
            resamples: int = 10_000) -> dict[str, Any]:
    """Compare the folders; write compare.md, compare.json and compare.png to ``out_dir`` (default
    ``dirs[0]/compare``). Returns the JSON content (plus the paths written under "files")."""
    from mathrecipe.evaluate.run import same_answer

    entries = load_entries(dirs)
    out = Path(out_dir) if out_dir else Path(dirs[0]) / "compare"
    same = same_answer()
    result: dict[str, Any] = {"entries": [{"label": e.label, "source": e.source} for e in entries],
                              "seed": seed, "resamples": resamples, "benchmarks": {}}
    names = list(dict.fromkeys(b for e in entries for b in e.rows))
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    lines = ["# Comparison", "", "Accuracies in %. pass@1: mean over each problem's samples, normal 95 % CI over "
             "problems. Δ: mean per-problem difference against the first entry on the problems both hold, with a "
             f"bootstrap 95 % CI ({resamples} resamples of problems, seed {seed}).", ""]
    lines += [f"{i + 1}. **{e.label}**: `{e.source}`" for i, e in enumerate(entries)]
    for name in names:
        mine = [e for e in entries if name in e.rows]
        longest = max(r["tokens"] for e in mine for r in e.rows[name])
        grid = budget_grid(longest, CURVE_POINTS)
        base = mine[0].rows[name]
        table, curves = [], {}
        for e in mine:
            rows = e.rows[name]
            s = summarize(rows, ks=[len(rows) // len({str(r["id"]) for r in rows})], same=same)  # maj@n, pass@n
            row: dict[str, Any] = {"label": e.label, "summary": s}
            if e is not mine[0]:
                row["vs_first"] = _paired(base, rows, seed, resamples)
            table.append(row)
            curves[e.label] = [[b, a] for b, a in accuracy_at_budgets(rows, grid).items()]
        result["benchmarks"][name] = {"table": table, "budget_curves": curves}
        panels[name] = {label: [(b, a) for b, a in pts] for label, pts in curves.items()}
        lines += ["", f"## {name}", "", "| entry | problems | samples | pass@1 (95% CI) | maj@n | mean tokens | "
                  "mean tokens (correct) | truncated | Δ pass@1 (95% CI) | Δ mean tokens (95% CI) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in table:
            s, d = row["summary"], row.get("vs_first")
            n = str(s["samples"])
            if d is None:
                delta = ["(first)", "(first)"] if row is table[0] else ["no common problems"] * 2
            else:
                a, t = d["accuracy"], d["mean_tokens"]
                delta = [f"{signed(100 * a[0], 1)} ({signed(100 * a[1], 1)}, {signed(100 * a[2], 1)})",
                         f"{signed(t[0], 0)} ({signed(t[1], 0)}, {signed(t[2], 0)})"]
            lines.append(
                f"| {row['label']} | {s['n_problems']} | {n} | {pct(s['accuracy'])} ({pct(s['ci95'][0])}–"
                f"{pct(s['ci95'][1])}) | {pct(s['maj@k'][n])} | {s['mean_tokens']:.0f} | "
                f"{'–' if s['mean_tokens_correct'] is None else format(s['mean_tokens_correct'], '.0f')} | "
                f"{pct(s['truncation_rate'])} | {delta[0]} | {delta[1]} |")
    out.mkdir(parents=True, exist_ok=True)
    files = {"markdown": str(out / "compare.md"), "json": str(out / "compare.json"), "png": str(out / "compare.png"),
             "pareto": str(out / "pareto.png")}
    plot_budget_curves(panels, files["png"])
    groups = {e.label: e.group for e in entries}
    plot_pareto({name: [(row["label"], row["summary"]["mean_tokens"], row["summary"]["accuracy"],
                         groups[row["label"]]) for row in b["table"]] for name, b in result["benchmarks"].items()},
                files["pareto"])
    atomic_write_text(files["json"], json.dumps(result, indent=2) + "\n")
    atomic_write_text(files["markdown"], "\n".join(lines) + "\n\nAccuracy vs token budget: `compare.png`; accuracy vs "
                      "mean tokens, one point per entry: `pareto.png`.\n")
    return {**result, "files": files}


def _paired(base: list[dict[str, Any]], rows: list[dict[str, Any]], seed: int,
            resamples: int) -> dict[str, Any] | None:
    """Per-problem differences (rows minus base) of pass@1 and mean tokens on the common problems."""
    a_acc, b_acc = _per_problem(base, "correct"), _per_problem(rows, "correct")
    a_tok, b_tok = _per_problem(base, "tokens"), _per_problem(rows, "tokens")
    common = [k for k in a_acc if k in b_acc]
    if not common:
        return None
    return {"problems": len(common),
            "accuracy": list(paired_bootstrap([a_acc[k] for k in common], [b_acc[k] for k in common],
                                              resamples, seed)),
            "mean_tokens": list(paired_bootstrap([a_tok[k] for k in common], [b_tok[k] for k in common],
                                                 resamples, seed))}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (tokens, accuracy) that no other point beats on both: fewer or equal tokens with
    higher accuracy, or fewer tokens with equal or higher accuracy. Sorted by tokens."""
    front = [i for i, (t, a) in enumerate(points)
             if not any((t2 <= t and a2 > a) or (t2 < t and a2 >= a) for t2, a2 in points)]
    return sorted(front, key=lambda i: points[i][0])


def plot_pareto(panels: dict[str, list[tuple[str, float, float, str]]], path: str | Path) -> None:
    """Accuracy vs mean tokens, one panel per benchmark: a point per (label, tokens, accuracy, group), one colour
    and legend entry per group, the Pareto front joined; a PNG, atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (name, pts) in zip(axes[0], panels.items()):
        order = list(dict.fromkeys(g for *_, g in pts))
        cmap = plt.get_cmap("tab10")
        for k, g in enumerate(order):
            mine = [p for p in pts if p[3] == g]
            ax.scatter([p[1] for p in mine], [p[2] for p in mine], color=cmap(k % 10), label=g,
                       marker="*" if g == "start" else "o", s=90 if g == "start" else 36, zorder=3)
        front = pareto_front([(p[1], p[2]) for p in pts])
        ax.plot([pts[i][1] for i in front], [pts[i][2] for i in front], "--", color="gray", lw=1,
                label="Pareto front", zorder=2)
        ax.set_xlabel("mean tokens")
        ax.set_ylabel("accuracy (pass@1)")
        ax.set_title(f"{name}: accuracy vs tokens")
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_text(path, buf.getvalue())
