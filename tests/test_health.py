"""GRPO speaks up: per-step health, alarms in report.md, and a collapse guard that restores the last good policy."""

import json
from types import SimpleNamespace

import pytest

from mathrecipe.grpo import Accuracy, HealthMonitor
from mathrecipe.recipe import load_recipe

TINY = ["data.toy.n_sft=16", "data.toy.n_test=4", "data.toy.n_rl=32", "data.toy.n_dev=4",
        "model.toy.hidden_size=32", "model.toy.num_layers=1", "model.toy.num_heads=2", "model.toy.intermediate_size=64",
        "sft.enabled=false", "eval.samples=1", "eval.max_new_tokens=8", "grpo.batch_size=8", "grpo.num_generations=4",
        "grpo.logging_steps=1"]


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


@pytest.mark.slow
def test_short_completions_raise_the_truncation_alarm(tmp_path):
    from mathrecipe.cli import main

    out = tmp_path / "run"
    assert main(["-q", "run", f"output_dir={out}", *TINY, "grpo.max_steps=3", "grpo.max_completion_length=4",
                 "rewards.cosine.max_len=4", "health.window=2"]) == 0
    report = json.loads((out / "report.json").read_text())
    health = report["grpo"]["health"]
    assert len(health["steps"]) == report["grpo"]["steps"]
    assert {"mean_length", "p95_length", "truncation", "zero_std_groups", "kl", "entropy",
            "reward_format", "reward_accuracy"} <= set(health["steps"][-1])
    md = (out / "report.md").read_text()
    assert "**truncation**" in md and "grpo.max_completion_length" in md
    assert "**zero_variance**" in md  # every completion cut at 4 tokens: equal rewards, no learning signal


@pytest.mark.slow
def test_collapse_guard_restores_the_last_checkpoint_before_the_trip(tmp_path):
    from mathrecipe.cli import main

    out = tmp_path / "run"
    # a briefly SFT-trained start varies its lengths, so GRPO moves the policy and the KL leaves 0 at step 2
    args = [a for a in TINY if a != "sft.enabled=false"]
    assert main(["-q", "run", f"output_dir={out}", *args, "data.toy.n_sft=64", "sft.epochs=2", "sft.batch_size=8",
                 "sft.learning_rate=3e-3", "sft.warmup_steps=0", "grpo.max_steps=4", "grpo.max_completion_length=48",
                 "rewards.cosine.max_len=48", "grpo.learning_rate=1e-2", "grpo.max_kl=1e-9",
                 "grpo.save_steps=1"]) == 0
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    stop = report["grpo"]["stopped_early"]
    # step 1's policy equals the reference (KL 0); the first positive KL trips the guard at step 2
    assert stop["step"] == 2 and stop["restored_step"] == 1
    assert "step 1" in md and "Collapse guard stopped GRPO at step 2" in md
    import filecmp

    assert filecmp.cmp(out / "grpo" / "checkpoint-1" / "model.safetensors",
                       out / "grpo" / "final" / "model.safetensors", shallow=False)
