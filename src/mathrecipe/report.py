"""What a run produced: ``report.json`` first; ``report.md`` and ``report.png`` are rendered from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The paper's two effects, as the toy claims them (issue thresholds; the toy must meet them with margin).
EFFECT1_MIN_LAST = 0.70  # last-epoch accuracy
EFFECT1_MIN_GAIN = 0.30  # last epoch minus epoch 1
EFFECT2_MAX_TOKEN_RATIO = 0.70  # mean tokens after GRPO / before
EFFECT2_MAX_ACC_DROP = 0.03  # accuracy may fall by at most this


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's two effects judged on a run's report: one row each, with the numbers and, when not reproduced,
    the likely cause.

    effect 1 (long SFT keeps improving): acc[last] >= 0.70 and acc[last] >= acc[1] + 0.30
    effect 2 (GRPO shortens, keeps accuracy): tokens_after / tokens_before <= 0.70 and acc_after >= acc_before - 0.03
    """
    out: list[dict[str, Any]] = []
    sft = report.get("sft") or {}
    scored = [e for e in sft.get("epochs", []) if e.get("accuracy") is not None]
    if scored:
        first, last = scored[0]["accuracy"], scored[-1]["accuracy"]
        ok = last >= EFFECT1_MIN_LAST and last >= first + EFFECT1_MIN_GAIN
        why = None
        if not ok:
            why = ("SFT did not learn the task" if last < EFFECT1_MIN_LAST
                   else "accuracy was already high after the first epoch: nothing left for long SFT to show")
        out.append({"effect": "effect 1 (long SFT keeps improving)", "reproduced": ok,
                    "numbers": f"{first:.2f} -> {last:.2f}", "first": first, "last": last, "cause": why})
    start, grpo = report.get("start"), report.get("grpo")
    if start and grpo and start.get("mean_tokens") and grpo.get("accuracy") is not None:
        ratio = grpo["mean_tokens"] / start["mean_tokens"]
        delta = grpo["accuracy"] - start["accuracy"]
        ok = ratio <= EFFECT2_MAX_TOKEN_RATIO and delta >= -EFFECT2_MAX_ACC_DROP
        why = None
        if not ok:
            if start["accuracy"] < EFFECT1_MIN_LAST:
                why = (f"the starting model solves only {start['accuracy']:.0%} of the problems, so the rewards were "
                       "mostly 'wrong' and GRPO had little to shorten")
            elif delta < -EFFECT2_MAX_ACC_DROP:
                why = "GRPO cut length at the cost of accuracy (try a lower grpo.learning_rate or a higher grpo.beta)"
            else:
                why = "GRPO did not shorten enough (more grpo.max_steps, or more prompts per step)"
        out.append({"effect": "effect 2 (GRPO shortens, keeps accuracy)", "reproduced": ok,
                    "numbers": f"{ratio:.2f}x, {delta:+.2f}", "token_ratio": ratio, "accuracy_change": delta,
                    "cause": why})
    return out


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def render_markdown(report: dict[str, Any]) -> str:
    ev = report.get("eval", {})
    lines = ["# mathrecipe run report", ""]
    lines.append(
        f"Test problems: {ev.get('n_problems', '?')}, samples per problem: {ev.get('samples', '?')} "
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
        for name, m in (grpo.get("limits") or {}).items():
            lines += ["", f"rewards.{name}.limit: {m['limit']} {m['unit']}, the {m['percentile']:g}th percentile of "
                          f"the start model's lengths on {m['completions']} {m['measured_on']} completions (mean "
                          f"{m['mean']:.1f})."]
        lines += _stop_lines(grpo)
        lines += ["", "### Health alarms", ""] + _health_lines(grpo.get("health") or {}, grpo.get("steps", 0))
    resumed, reused = report.get("resumed"), report.get("reused")
    if resumed:
        lines += ["", "Resumed: " + "; ".join(f"{k} from {v}" for k, v in resumed.items()) + "."]
    if reused:
        lines += ["", "Finished in an earlier invocation and reused: " + ", ".join(reused) + "."]
    v = _verdict_text(report.get("verdicts") or [])
    if v:
        lines += ["", "## Verdict", ""] + [f"- {x}" for x in v]
    return "\n".join(lines) + "\n"


def _stop_lines(grpo: dict[str, Any]) -> list[str]:
    """Why GRPO stopped early and which policy was saved."""
    lines: list[str] = []
    s = grpo.get("stopped_early")
    if s:
        lines.append(f"\nCollapse guard stopped GRPO at step {s['step']}: {s['reason']}.")
        a, b = s["window_start"] + 1, s["step"]
        measured = (f"the KL of steps {a}-{b} was measured with the policies after {a - 1}-{b - 1} updates "
                    "(TRL computes step s's KL before its update)")
        if s.get("restored_step"):
            lines.append(f"The saved policy is checkpoint {s['restored_step']}, the newest outside the tripping "
                         f"window: {measured}.")
        elif s.get("restored_step") == 0:
            lines.append(f"The saved policy is the start model ({s.get('restored')}): {measured}"
                         + (f"; {s['note']}." if s.get("note") else "."))
        elif s.get("note"):  # a report written before the rule above
            lines.append(f"Note: {s['note']}.")
    a = grpo.get("stopped_by_alarm")
    if a:
        lines.append(f"\nHealth alarm **{a['alarm']}** stopped GRPO at step {a['step']} (health.stop: true).")
    return lines


def _health_lines(health: dict[str, Any], total_steps: int) -> list[str]:
    """The alarms, over which steps they were judged, and what could not be judged (said plainly)."""
    alarms, j = health.get("alarms") or [], health.get("judged")
    lines = [f"- step {a['step']}: **{a['name']}**: {a['message']}" for a in alarms]
    if j is None:  # a report written before judgements were recorded
        return lines or ["None (truncation, zero-variance groups, format-vs-accuracy trend, KL, entropy)."]
    if j["steps"] == 0:
        return lines + [f"Nothing could be judged: none of the {total_steps} GRPO steps has a health record."]
    if not alarms:
        lines.append("None (truncation, zero-variance groups, format-vs-accuracy trend, KL, entropy).")
    if j.get("short"):
        lines.append(f"\nThe run had {j['steps']} steps, fewer than health.window={j['window']}: the alarms were "
                     f"judged once, at the end, over all {j['steps']}.")
    else:
        lines.append(f"\nJudged over rolling windows of health.window={j['window']} steps ({j['steps']} steps).")
    if j.get("missing_steps"):
        m = j["missing_steps"]
        lines.append(f"No health record for {len(m)} step(s) ({m[0]}-{m[-1]})"
                     + (f": {j['restored_from']} was saved without one." if j.get("restored_from") else "."))
    if j.get("not_judged"):
        lines.append("Not judged: " + "; ".join(j["not_judged"]) + ".")
    return lines


def _verdict_text(rows: list[dict[str, Any]]) -> list[str]:
    return [f"{v['effect']}: reproduced ({v['numbers']})" if v["reproduced"]
            else f"{v['effect']}: NOT reproduced ({v['numbers']}): {v['cause']}" for v in rows]


def render_png(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = report_figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_figure(report: dict[str, Any]) -> Any:
    """The report's figure: SFT accuracy and tokens per epoch, GRPO before/after bars, GRPO health per step.
    Epoch and step axes carry whole-number ticks only; the bar chart's legend sits below its axes, off the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = ((report.get("grpo") or {}).get("health") or {}).get("steps") or []
    if steps:
        fig, axes = plt.subplots(2, 2, figsize=(11, 8))
        (ax1, ax2), (ax3, ax4) = axes
        _health_panels(steps, ax3, ax4)
    else:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    sft = report.get("sft")
    if sft and any("accuracy" in e for e in sft["epochs"]):
        ep = [e["epoch"] for e in sft["epochs"] if "accuracy" in e]
        ax1.plot(ep, [e["accuracy"] for e in sft["epochs"] if "accuracy" in e], "o-", color="tab:blue")
        ax1.set_ylim(0, 1)
        ax1.set_xlabel("SFT epoch")
        ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax1.set_ylabel("test accuracy", color="tab:blue")
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
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("accuracy")
        tw = ax2.twinx()
        tw.bar([0.4, 1.4], [base["mean_tokens"], grpo["mean_tokens"]], width=0.35, color="tab:orange",
               label="mean tokens")
        tw.set_ylabel("mean completion tokens")
        tw.set_ylim(0, 1.05 * max(base["mean_tokens"], grpo["mean_tokens"]))
        ax2.set_xticks([0.2, 1.2], names)
        ax2.set_title("Stage 2: GRPO (accuracy, tokens)")
        handles = ax2.get_legend_handles_labels()[0] + tw.get_legend_handles_labels()[0]
        # below the axes (under the model names): inside, it covered the taller bar whatever the headroom
        ax2.legend(handles, ["accuracy", "mean tokens"], loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2,
                   fontsize=8, frameon=False)
    else:
        ax2.set_axis_off()
    fig.tight_layout()
    return fig


KNOWN_REWARD_COLORS = {"format": "tab:green", "accuracy": "tab:blue", "cosine": "tab:purple", "length": "tab:brown"}
REWARD_COLORS = ("tab:green", "tab:blue", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "gold")


def reward_series(steps: list[dict[str, Any]]) -> list[str]:
    """Every ``reward_<name>`` series the health rows hold (one per reward TRL logged), in first-seen order."""
    return list(dict.fromkeys(k for r in steps for k in r if k.startswith("reward_") and r[k] is not None))


def _health_panels(steps: list[dict[str, Any]], ax_len: Any, ax_rew: Any) -> None:
    """GRPO per step: completion length (mean, p95) and truncation; reward means, accuracy, KL and entropy."""
    from matplotlib.ticker import MaxNLocator

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(r["step"], r[key]) for r in steps if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    for key, style, label in (("mean_length", "-", "mean length"), ("p95_length", "--", "p95 length")):
        x, y = series(key)
        if x:
            ax_len.plot(x, y, style, color="tab:orange", label=label)
    ax_len.set_xlabel("GRPO step")
    ax_len.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_len.set_ylabel("completion tokens")
    tw = ax_len.twinx()
    x, y = series("truncation")
    if x:
        tw.plot(x, y, ":", color="tab:red", label="truncated share")
    tw.set_ylim(0, 1)
    tw.set_ylabel("share")
    x, y = series("zero_std_groups")
    if x:
        tw.plot(x, y, "-.", color="tab:gray", label="zero-variance groups")
    handles = ax_len.get_legend_handles_labels()[0] + tw.get_legend_handles_labels()[0]
    if handles:
        ax_len.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
    ax_len.set_title("GRPO health: length, truncation, signal")
    spare = iter(c for c in REWARD_COLORS if c not in KNOWN_REWARD_COLORS.values())
    for key in reward_series(steps):
        x, y = series(key)
        name = key.removeprefix("reward_")
        ax_rew.plot(x, y, "-", color=KNOWN_REWARD_COLORS.get(name) or next(spare, None), label=name)
    ax_rew.set_xlabel("GRPO step")
    ax_rew.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_rew.set_ylabel("reward mean")
    tw2 = ax_rew.twinx()
    for key, style in (("kl", "--"), ("entropy", ":")):
        x, y = series(key)
        if x:
            tw2.plot(x, y, style, color="black", label=key)
    tw2.set_ylabel("KL, entropy")
    handles = ax_rew.get_legend_handles_labels()[0] + tw2.get_legend_handles_labels()[0]
    if handles:
        ax_rew.legend(handles, [h.get_label() for h in handles], loc="lower right", fontsize=8)
    ax_rew.set_title("GRPO health: rewards, KL, entropy")


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    from mathrecipe.files import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    tmp = out / ".report.tmp.png"
    render_png(report, tmp)
    tmp.replace(out / "report.png")
    return out / "report.json"
