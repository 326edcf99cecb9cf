"""GRPO speaks up: per-step health, alarms in report.md, and a collapse guard that restores the last good policy."""

import json
from types import SimpleNamespace

import pytest
from helpers import tiny_run

from mathrecipe.health import HealthMonitor
from mathrecipe.recipe import load_recipe
from mathrecipe.rewards import Accuracy

TINY = tiny_run(16, 4, 32, 4, "sft.enabled=false", "eval.samples=1", "eval.max_new_tokens=8",
                "grpo.per_device_train_batch_size=8", "grpo.num_generations=4", "grpo.logging_steps=1")


def _monitor(*overrides):
    return HealthMonitor(load_recipe(None, list(overrides)), Accuracy())


def _feed(m, rows):
    for i, r in enumerate(rows, 1):
        m.steps.append({"step": i, **r})
        for a in m.check():
            m.alarms.setdefault(a["name"], a)


def test_alarms_fire_on_their_thresholds_and_not_below():
    m = _monitor("health.window=4")
    _feed(m, [{"truncation": 0.1, "zero_std_groups": 0.2}] * 4)
    assert m.alarms == {}
    _feed(m, [{"truncation": 0.5, "zero_std_groups": 0.9}] * 4)
    assert {"truncation", "zero_variance"} <= set(m.alarms)
    assert m.alarms["truncation"]["threshold"] == 0.2


def test_format_up_while_accuracy_down_is_reward_hacking():
    m = _monitor("health.window=4")
    _feed(m, [{"reward_format": f, "reward_accuracy": a} for f, a in [(0.5, 0.8), (0.5, 0.8), (0.9, 0.5),
                                                                      (0.9, 0.5)]])
    assert "format_up_accuracy_down" in m.alarms
    ok = _monitor("health.window=4")
    _feed(ok, [{"reward_format": f, "reward_accuracy": a} for f, a in [(0.5, 0.5), (0.5, 0.5), (0.9, 0.8),
                                                                       (0.9, 0.8)]])
    assert ok.alarms == {}


def test_step_values_come_from_the_trainer_buffers_once_each():
    m = _monitor()
    m.trainer = SimpleNamespace(_metrics={"train": {"kl": [0.1, 0.3], "completions/clipped_ratio": [0.5],
                                                    "rewards/format/mean": [1.0]}})
    m.accuracy.lengths.extend(range(1, 101))
    m.on_step_end(None, SimpleNamespace(global_step=1), SimpleNamespace(should_training_stop=False))
    assert m.steps[-1] == {"step": 1, "kl": 0.2, "truncation": 0.5, "reward_format": 1.0, "p95_length": 96.0}
    m.trainer._metrics["train"]["kl"].append(0.5)  # step 2 adds one micro-batch value
    m.on_step_end(None, SimpleNamespace(global_step=2), SimpleNamespace(should_training_stop=False))
    assert m.steps[-1] == {"step": 2, "kl": 0.5}


def test_a_run_shorter_than_the_window_is_judged_at_the_end_over_its_steps():
    m = _monitor()  # health.window=10
    _feed(m, [{"truncation": 1.0, "zero_std_groups": 1.0, "entropy": 1.0}] * 3)
    assert m.alarms == {}  # during training an alarm waits for a full window
    m.finish()
    assert {"truncation", "zero_variance"} <= set(m.alarms)
    assert m.alarms["truncation"]["steps_judged"] == 3 and "fewer than health.window=10" in m.alarms["truncation"][
        "message"]
    j = m.judged(total_steps=3)
    assert j["short"] and j["steps"] == 3 and j["missing_steps"] == []
    quiet = _monitor()
    _feed(quiet, [{"truncation": 0.0, "zero_std_groups": 0.0}] * 3)
    quiet.finish()
    assert quiet.alarms == {}


def test_the_report_says_plainly_what_could_not_be_judged():
    from mathrecipe.report import render_markdown

    grpo = {"steps": 4, "health": {"steps": [], "alarms": [], "judged": _monitor().judged(total_steps=4)}}
    md = render_markdown({"grpo": grpo})
    assert "Nothing could be judged: none of the 4 GRPO steps has a health record" in md
    assert "None (truncation" not in md


def test_health_is_saved_in_each_checkpoint_and_restored_on_resume(tmp_path):
    """on_save writes the rows so far into the checkpoint; restore keeps the rows up to its step (a row written
    after the save, lost in a kill, is trained again), the alarms raised by then, and so the entropy baseline."""
    from mathrecipe.health import HEALTH_FILE

    m = _monitor("health.window=2")
    _feed(m, [{"truncation": 0.9, "entropy": 2.0}, {"truncation": 0.9, "entropy": 2.5}])
    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    m.on_save(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=2, is_world_process_zero=True),
              None)
    m.steps.append({"step": 3, "truncation": 0.1, "entropy": 9.0})  # after the save: lost in a kill
    back = _monitor("health.window=2")
    back.restore(ckpt)
    assert back.steps == m.steps[:2] and set(back.alarms) == {"truncation"} and back.restored_from == str(ckpt)
    assert json.loads((ckpt / HEALTH_FILE).read_text())["steps"][0]["entropy"] == 2.0
    old = tmp_path / "checkpoint-4"
    old.mkdir()  # saved by a version without health files
    legacy = _monitor()
    legacy.restore(old)
    assert legacy.steps == [] and legacy.judged(total_steps=6)["missing_steps"] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_short_completions_raise_the_truncation_alarm_on_a_run_shorter_than_the_window(tmp_path):
    from mathrecipe.cli import main

    out = tmp_path / "run"
    # 3 steps against the default health.window of 10: judged at the end over the 3 steps that ran
    assert load_recipe(None).health.window == 10
    assert main(["-q", "run", f"output_dir={out}", *TINY, "grpo.max_steps=3", "grpo.max_completion_length=4",
                 "rewards.cosine.max_len=4"]) == 0
    report = json.loads((out / "report.json").read_text())
    health = report["grpo"]["health"]
    assert len(health["steps"]) == report["grpo"]["steps"]
    assert {"mean_length", "p95_length", "truncation", "zero_std_groups", "kl", "entropy",
            "reward_format", "reward_accuracy"} <= set(health["steps"][-1])
    md = (out / "report.md").read_text()
    assert "**truncation**" in md and "grpo.max_completion_length" in md
    assert "**zero_variance**" in md  # every completion cut at 4 tokens: equal rewards, no learning signal
    assert health["judged"]["short"] and "fewer than health.window=10" in md


@pytest.mark.slow
def test_collapse_guard_restores_the_newest_policy_outside_the_tripping_window(tmp_path):
    """Step s's KL is measured with the policy after s - 1 updates (checkpoint-(s-1)). A warm-up of 2 steps makes
    update 1 a zero step (lr x 0/2), so checkpoint-1 equals the start model (the reference) and steps 1 and 2 log
    KL 0; update 2 moves the policy, step 3 measures it and trips max_kl=1e-9. The window (step 3) measured
    checkpoint-2: the saved policy must be checkpoint-1, not checkpoint-2. (HF's "constant" schedule has no warm-up:
    constant_with_warmup.)"""
    from safetensors.torch import load_file

    from mathrecipe.cli import main

    out = tmp_path / "run"
    # a briefly SFT-trained start varies its lengths, so the length rewards differ within groups and GRPO moves it
    args = [a for a in TINY if a != "sft.enabled=false"]
    assert main(["-q", "run", f"output_dir={out}", *args, "data.toy.n_sft=64", "sft.epochs=2", "sft.per_device_train_batch_size=8",
                 "sft.learning_rate=3e-3", "sft.warmup_steps=0", "grpo.max_steps=5", "grpo.max_completion_length=48",
                 "rewards.cosine.max_len=48", "grpo.learning_rate=1e-2", "grpo.lr_scheduler=constant_with_warmup",
                 "grpo.warmup_steps=2", "grpo.max_kl=1e-9", "grpo.save_steps=1"]) == 0
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    stop = report["grpo"]["stopped_early"]
    assert stop["step"] == 3 and stop["window_start"] == 2 and stop["restored_step"] == 1
    assert "Collapse guard stopped GRPO at step 3" in md and "checkpoint 1" in md

    def weights(folder):
        return load_file(str(folder / "model.safetensors"))

    final, ckpt1, ckpt2 = (weights(out / "grpo" / d) for d in ("final", "checkpoint-1", "checkpoint-2"))
    assert all(final[k].equal(ckpt1[k]) for k in final)
    assert any(not final[k].equal(ckpt2[k]) for k in final)  # the tripping policy is not the one kept
