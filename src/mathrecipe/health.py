"""GRPO's guards: the collapse guard (stop at a KL threshold, name the policy to keep) and the health monitor
(per-step lengths, truncation, rewards, zero-variance groups, KL, entropy; the alarms of ``recipe.health``).

Both are transformers ``TrainerCallback``s that :func:`mathrecipe.grpo.run_grpo` adds to TRL's GRPOTrainer; they read
the trainer's own metrics and never change what it computes.
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from mathrecipe.checkpoints import checkpoint_step
from mathrecipe.files import atomic_write_json

if TYPE_CHECKING:  # annotations only: the stage imports this module, not the other way round
    from mathrecipe.recipe import Recipe
    from mathrecipe.rewards import Accuracy

log = logging.getLogger("mathrecipe.grpo")  # the stage's logger: its warnings read as GRPO's


class CollapseGuard(TrainerCallback):
    """Stops training when the logged KL to the reference passes ``max_kl``, and says which policy to keep.

    The paper's GRPO collapsed past ~60 steps and its authors picked an early checkpoint by hand; on the toy task a
    too-high learning rate cut length but collapsed accuracy with KL peaking at 0.8.

    What a logged KL measures (TRL 1.16 ``GRPOTrainer._compute_loss``): every micro-batch of optimizer step ``s``
    (all gradient-accumulation passes, whatever ``steps_per_generation`` and ``num_iterations`` are) appends the KL
    of its forward pass to a buffer, and that forward pass runs the weights after ``s - 1`` updates. ``log`` averages
    the buffer and empties it; the Trainer logs every ``logging_steps`` steps and once more at the end. So a log at
    step ``S`` whose previous log (or the resumed step) was ``W`` averages steps ``W+1..S``: the policies after
    ``W..S-1`` updates, i.e. the ones saved as ``checkpoint-W .. checkpoint-(S-1)``. :func:`last_safe_step` names
    the newest policy outside that window.
    """

    def __init__(self, max_kl: float | None) -> None:
        self.max_kl = max_kl
        self.stopped: dict[str, Any] | None = None
        self._last_log = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._last_log = state.global_step  # a resumed run starts with empty metric buffers at its checkpoint

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
        window_start, self._last_log = self._last_log, state.global_step
        kl = (logs or {}).get("kl")
        if self.max_kl is not None and kl is not None and kl > self.max_kl:
            self.trip(state.global_step, window_start,
                      f"kl {kl:.3f} (mean of steps {window_start + 1}-{state.global_step}) > grpo.max_kl {self.max_kl}")
            control.should_training_stop = True

    def trip(self, step: int, window_start: int, reason: str) -> None:
        """Record a trip at ``step`` by KL values of steps ``window_start+1..step`` (the first trip's reason is
        kept; a second one at the same stop can only widen the window)."""
        if self.stopped is None:
            self.stopped = {"step": step, "window_start": window_start, "reason": reason}
            log.warning("GRPO collapse guard: %s at step %d; stopping", reason, step)
        else:
            self.stopped["window_start"] = min(self.stopped["window_start"], window_start)


def last_safe_step(window_start: int) -> int:
    """The newest policy that no KL value of a tripping window measured: ``window_start - 1``.

    The window holds steps ``window_start+1 .. trip``; step ``s``'s KL is measured with the policy after ``s - 1``
    updates (``checkpoint-(s-1)``), so the window measured ``checkpoint-window_start`` onwards. 0 is the start
    model, the reference itself (KL 0 by definition), always safe.
    """
    return max(0, window_start - 1)


HEALTH_KEYS = {  # TRL 1.16 metric -> our name
    "completions/mean_length": "mean_length", "completions/clipped_ratio": "truncation",
    "frac_reward_zero_std": "zero_std_groups", "kl": "kl", "entropy": "entropy", "reward": "reward",
    "zero_std_groups_by_prompt": "zero_std_groups",  # Monitor's, under scale_rewards=batch (TRL's is batch-wide)
}


HEALTH_FILE = "mathrecipe_health.json"  # per-step health saved in each GRPO checkpoint (not copied to final/)


class HealthMonitor(TrainerCallback):
    """Per GRPO step: mean and 95th-percentile completion length, truncation rate, each reward's mean, the share of
    zero-variance groups (no learning signal), KL and entropy; and the alarms of ``recipe.health``.

    Step values come from the trainer's own metric buffers (averaged over the step's micro-batches), so they exist
    for every step whatever ``logging_steps`` is. Alarms are judged during training over the last ``health.window``
    steps, and once more at the end over the steps that ran (so a run shorter than the window is judged too). The
    rows and alarms are saved in every checkpoint (``HEALTH_FILE``) and restored on resume, so curves, alarm windows
    and the entropy baseline continue across a kill.
    """

    def __init__(self, recipe: Recipe, accuracy: Accuracy, guard: CollapseGuard | None = None) -> None:
        self.h, self.max_kl, self.accuracy, self.guard = recipe.health, recipe.grpo.max_kl, accuracy, guard
        # under batch-wise scaling TRL's frac_reward_zero_std says whether the whole batch's std is 0
        self.skip = {"frac_reward_zero_std"} if recipe.grpo.scale_rewards == "batch" else set()
        self.trainer: Any = None
        self.steps: list[dict[str, float]] = []
        self.alarms: dict[str, dict[str, Any]] = {}
        self.stopped_by: dict[str, Any] | None = None
        self.restored_from: str | None = None
        self._seen: dict[str, int] = {}

    # ---- persistence

    def state(self) -> dict[str, Any]:
        return {"steps": self.steps, "alarms": list(self.alarms.values())}

    def restore(self, ckpt: Path) -> None:
        """Continue from the health saved in checkpoint ``ckpt`` (steps up to its step); a checkpoint saved without
        one (an older version) leaves the history empty, and the report says which steps it lacks."""
        f = Path(ckpt) / HEALTH_FILE
        if not f.is_file():
            log.warning("%s holds no %s: GRPO health before step %d is not known", ckpt, HEALTH_FILE,
                        checkpoint_step(ckpt))
            return
        saved = json.loads(f.read_text())
        upto = checkpoint_step(ckpt)
        self.steps = [r for r in saved.get("steps", []) if r.get("step", 0) <= upto]
        self.alarms = {a["name"]: a for a in saved.get("alarms", []) if a.get("step", 0) <= upto}
        self.restored_from = str(ckpt)

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and ckpt.is_dir():  # before CompleteMarker marks the checkpoint complete
            atomic_write_json(ckpt / HEALTH_FILE, self.state())

    # ---- per step

    def on_log(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._seen = {}  # the trainer empties its buffers right after logging

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        buffers = getattr(self.trainer, "_metrics", {}).get("train", {}) if self.trainer is not None else {}
        row: dict[str, float] = {"step": state.global_step}
        for key, values in buffers.items():
            new = [v for v in values[self._seen.get(key, 0):] if v == v]  # drop NaN
            self._seen[key] = len(values)
            if not new:
                continue
            name = HEALTH_KEYS.get(key) if key not in self.skip else None
            if name is None and key.startswith("rewards/") and key.endswith("/mean"):
                name = "reward_" + key.split("/")[1]
            if name:
                row[name] = statistics.fmean(new)
        if self.accuracy.lengths:
            s = sorted(self.accuracy.lengths)
            row["p95_length"] = float(s[min(len(s) - 1, int(0.95 * len(s)))])
            self.accuracy.lengths.clear()
        self.steps.append(row)
        for alarm in self._record(self.check()):
            if self.h.stop:
                control.should_training_stop = True
                if alarm["name"] == "kl" and self.guard is not None:
                    # a per-step KL: the window is this one step, measured with the policy after step - 1 updates
                    self.guard.trip(alarm["step"], alarm["step"] - 1, alarm["message"] + " (health.stop)")
                elif self.stopped_by is None:
                    self.stopped_by = {"step": alarm["step"], "alarm": alarm["name"]}

    def finish(self) -> None:
        """The end-of-training judgement: every alarm over the steps that ran when there were fewer than
        ``health.window`` (during training an alarm waits for a full window)."""
        self._record(self.check(final=True))

    def _record(self, alarms: list[dict[str, Any]]) -> list[dict[str, Any]]:
        new = [a for a in alarms if a["name"] not in self.alarms]
        for a in new:
            self.alarms[a["name"]] = a
            log.warning("GRPO health alarm at step %d: %s", a["step"], a["message"])
        return new

    # ---- the rules

    def check(self, final: bool = False) -> list[dict[str, Any]]:
        """The alarms that hold now, judged over the last ``health.window`` steps; with ``final``, over the steps
        that ran when they are fewer (a rolling mean over n < window steps is the mean of all n).

        truncation: mean truncated share > health.max_truncation; zero_variance: mean share of equal-reward groups >
        health.max_zero_std_groups; format_up_accuracy_down: over the judged steps' halves, format rose and accuracy
        fell by more than health.trend; kl: the last step's KL > grpo.max_kl; entropy: mean entropy of the judged
        steps after the first / the first step's > health.max_entropy_growth.
        """
        out: list[dict[str, Any]] = []
        step = self.steps[-1]["step"] if self.steps else 0
        n, w = len(self.steps), self.h.window
        span = w if n >= w else (n if final else 0)
        judged = self.steps[-span:] if span else []
        over = f"{span} steps" + ("" if span == w else f" (all that ran: fewer than health.window={w})")

        def values(key: str) -> list[float]:
            return [r[key] for r in judged if key in r]

        def alarm(name: str, value: float, threshold: float, message: str) -> None:
            out.append({"name": name, "step": step, "value": value, "threshold": threshold, "message": message,
                        "steps_judged": span})

        trunc = values("truncation")
        if trunc and statistics.fmean(trunc) > self.h.max_truncation:
            v = statistics.fmean(trunc)
            alarm("truncation", v, self.h.max_truncation,
                  f"{v:.0%} of completions hit grpo.max_completion_length over {over} (> health.max_truncation "
                  f"{self.h.max_truncation:.0%}): truncated completions get no correct-answer reward; raise "
                  "grpo.max_completion_length")
        zero = values("zero_std_groups")
        if zero and statistics.fmean(zero) > self.h.max_zero_std_groups:
            v = statistics.fmean(zero)
            alarm("zero_variance", v, self.h.max_zero_std_groups,
                  f"{v:.0%} of prompt groups have equal rewards over {over} (> health.max_zero_std_groups "
                  f"{self.h.max_zero_std_groups:.0%}): no learning signal; use harder/easier prompts or more "
                  "grpo.num_generations")
        fmt, acc = values("reward_format"), values("reward_accuracy")
        if span >= 2 and len(fmt) == len(acc) == span:
            half = span // 2
            d_fmt = statistics.fmean(fmt[half:]) - statistics.fmean(fmt[:half])
            d_acc = statistics.fmean(acc[half:]) - statistics.fmean(acc[:half])
            if d_fmt > self.h.trend and d_acc < -self.h.trend:
                alarm("format_up_accuracy_down", d_acc, -self.h.trend,
                      f"format reward rose {d_fmt:+.2f} while accuracy fell {d_acc:+.2f} over {over} "
                      "(reward hacking: the policy learns the format, not the answers)")
        kls = [r["kl"] for r in self.steps if "kl" in r]
        if self.max_kl is not None and kls and kls[-1] > self.max_kl:
            alarm("kl", kls[-1], self.max_kl, f"KL {kls[-1]:.3f} at step {step} > grpo.max_kl {self.max_kl}")
        ent = [r["entropy"] for r in self.steps if "entropy" in r]
        if (len(ent) > w or (final and len(ent) >= 2)) and ent[0] > 0:
            v = statistics.fmean(ent[1:][-w:]) / ent[0]
            if v > self.h.max_entropy_growth:
                alarm("entropy", v, self.h.max_entropy_growth,
                      f"entropy grew {v:.1f}x since the first step (> health.max_entropy_growth): the policy is "
                      "drifting towards noise; lower grpo.learning_rate")
        return out

    def judged(self, total_steps: int) -> dict[str, Any]:
        """What the alarms could judge, for the report: steps with a health row, steps without one, the window
        used, and each check that had nothing to judge with the reason."""
        n, w = len(self.steps), self.h.window
        have = {int(r["step"]) for r in self.steps}
        missing = [s for s in range(1, total_steps + 1) if s not in have]
        keys = set().union(*(r.keys() for r in self.steps)) if self.steps else set()
        not_judged = []
        for key, what in (("truncation", "truncation"), ("zero_std_groups", "zero-variance groups")):
            if key not in keys:
                not_judged.append(f"{what} (no step logged it)")
        if n < 2 or not {"reward_format", "reward_accuracy"} <= keys:
            not_judged.append("format-vs-accuracy trend (needs 2 steps with both rewards)")
        if self.max_kl is None:
            not_judged.append("KL (grpo.max_kl is off)")
        elif "kl" not in keys:
            not_judged.append("KL (no step logged it)")
        if sum("entropy" in r for r in self.steps) < 2:
            not_judged.append("entropy growth (needs 2 steps)")
        return {"steps": n, "window": w, "short": 0 < n < w, "missing_steps": missing, "not_judged": not_judged,
                "restored_from": self.restored_from}
