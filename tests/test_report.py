"""report.md and report.png: views of report.json that say what was measured, and only that."""

from mathrecipe.report import render_markdown, report_figure

STEPS = [{"step": s, "mean_length": 60.0 - s, "p95_length": 80.0, "truncation": 0.1, "zero_std_groups": 0.2,
          "kl": 0.01 * s, "entropy": 1.0, "reward_format": 0.9, "reward_accuracy": 0.8} for s in range(1, 6)]
REPORT = {
    "eval": {"n_problems": 4, "samples": 1, "temperature": 0.6},
    "sft": {"epochs": [{"epoch": e, "accuracy": a, "mean_tokens": 60.0} for e, a in ((1, 0.1), (2, 0.5), (3, 0.95))],
            "selected_epoch": 3},
    "start": {"name": "SFT epoch 3", "accuracy": 0.95, "mean_tokens": 60.0, "mean_tokens_correct": 60.0},
    "grpo": {"steps": 5, "accuracy": 0.97, "mean_tokens": 40.0, "mean_tokens_correct": 40.0,
             "health": {"steps": STEPS, "alarms": []}},
}


def test_report_png_axes_count_whole_epochs_and_steps_and_the_legend_leaves_the_bars_alone():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig = report_figure(REPORT)
    fig.canvas.draw()
    try:
        by_label = {ax.get_xlabel(): ax for ax in fig.axes if ax.get_xlabel()}
        for label in ("SFT epoch", "GRPO step"):
            ax = by_label[label]
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), (label, ticks)
        renderer = fig.canvas.get_renderer()
        bars = [p.get_window_extent(renderer) for ax in fig.axes for p in ax.patches
                if isinstance(p, Rectangle) and p.get_height() > 0]
        assert len(bars) == 4  # accuracy and tokens, before and after GRPO
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        boxes = [lg.get_window_extent(renderer) for lg in legends if "mean tokens" in
                 [t.get_text() for t in lg.get_texts()]]
        assert boxes and not any(box.overlaps(bar) for box in boxes for bar in bars)
    finally:
        plt.close(fig)


def test_verdicts_appear_only_when_the_report_holds_them():
    assert "Verdict" not in render_markdown(REPORT)  # a run that measures no effect (not the toy)
    rows = [{"effect": "effect 1 (long SFT keeps improving)", "reproduced": True, "numbers": "0.10 -> 0.95"}]
    md = render_markdown({**REPORT, "verdicts": rows})
    assert md.count("effect 1 (long SFT keeps improving): reproduced (0.10 -> 0.95)") == 1
