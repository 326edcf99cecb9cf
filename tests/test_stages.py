"""Stage helpers: epoch selection, the GRPO collapse guard, device-aware precision, reward wiring."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from mathrecipe.grpo import build_rewards
from mathrecipe.hardware import checkpointing_field, precision_kwargs
from mathrecipe.health import CollapseGuard, last_safe_step
from mathrecipe.recipe import load_recipe
from mathrecipe.sft import select_epoch

EPOCHS = [{"epoch": 1, "accuracy": 0.1, "dev_accuracy": 0.2}, {"epoch": 2, "accuracy": 0.9, "dev_accuracy": 0.7},
          {"epoch": 3, "accuracy": 0.7, "dev_accuracy": 0.7}, {"epoch": 4, "accuracy": 0.6, "dev_accuracy": 0.6}]


def test_select_epoch_on_dev_accuracy_not_the_reported_one():
    assert select_epoch(EPOCHS, "last")["epoch"] == 4
    assert select_epoch(EPOCHS, "best")["epoch"] == 2  # earliest of the tied best dev accuracies
    skewed = [dict(e, accuracy=1.0 if e["epoch"] == 4 else 0.0) for e in EPOCHS]
    assert select_epoch(skewed, "best")["epoch"] == 2  # the held-out (reported) accuracy plays no part
    with pytest.raises(ValueError, match="dev"):
        select_epoch([{"epoch": 1, "accuracy": 0.5}], "best")


def test_collapse_guard_stops_on_kl():
    guard = CollapseGuard(max_kl=0.5)
    control = SimpleNamespace(should_training_stop=False)
    guard.on_log(None, SimpleNamespace(global_step=10), control, logs={"kl": 0.1, "reward": 1.0})
    assert not control.should_training_stop and guard.stopped is None
    guard.on_log(None, SimpleNamespace(global_step=20), control, logs={"kl": 0.8})
    assert control.should_training_stop
    # the logged KL averages steps 11..20, measured with the policies after 10..19 updates
    assert guard.stopped == {"step": 20, "window_start": 10, "reason": "kl 0.800 (mean of steps 11-20) > grpo.max_kl 0.5"}
    assert last_safe_step(guard.stopped["window_start"]) == 9
    off = CollapseGuard(max_kl=None)
    control = SimpleNamespace(should_training_stop=False)
    off.on_log(None, SimpleNamespace(global_step=1), control, logs={"kl": 99.0})
    assert not control.should_training_stop


def test_collapse_guard_window_follows_the_trainers_log_cadence():
    """TRL 1.16 appends each micro-batch's KL to a buffer in ``_compute_loss`` (the forward pass of step s runs the
    weights after s - 1 updates, i.e. checkpoint-(s-1)) and ``log`` averages and empties it: the Trainer logs every
    logging_steps steps, and once more at the end of training. A resumed run starts with an empty buffer."""
    guard = CollapseGuard(max_kl=0.5)
    state, control = SimpleNamespace(global_step=4), SimpleNamespace(should_training_stop=False)
    guard.on_train_begin(None, state, control)  # resumed from checkpoint-4, logging_steps=3
    state.global_step = 6
    guard.on_log(None, state, control, logs={"kl": 0.1})  # steps 5-6
    state.global_step = 9
    guard.on_log(None, state, control, logs={"kl": 0.1})  # steps 7-9
    state.global_step = 10  # max_steps: the end-of-training log averages step 10 alone
    guard.on_log(None, state, control, logs={"kl": 0.7, "train_runtime": 1.0})
    assert guard.stopped["window_start"] == 9 and guard.stopped["step"] == 10
    # step 10's KL measured checkpoint-9 (the policy after 9 updates): the newest policy outside is checkpoint-8
    assert last_safe_step(9) == 8
    fresh = CollapseGuard(max_kl=0.5)
    fresh.on_train_begin(None, SimpleNamespace(global_step=0), control)
    fresh.on_log(None, SimpleNamespace(global_step=1), control, logs={"kl": 0.9})
    # the first step's KL is the start model's: nothing trained is outside the window; the start model is the
    # reference itself (KL 0), always safe
    assert fresh.stopped["window_start"] == 0 and last_safe_step(0) == 0


def test_health_stop_on_a_per_step_kl_trips_the_guard_for_that_step_only():
    """health.stop=true with logging_steps > 1: the health KL is per step (from the trainer's buffers), so a trip
    at step 5 measured only checkpoint-4; checkpoint-3 is kept."""
    from mathrecipe.health import HealthMonitor
    from mathrecipe.rewards import Accuracy

    recipe = load_recipe(None, ["health.stop=true", "grpo.max_kl=0.5", "grpo.logging_steps=4"])
    guard = CollapseGuard(max_kl=0.5)
    m = HealthMonitor(recipe, Accuracy(), guard)
    buffers: dict = {"kl": []}
    m.trainer = SimpleNamespace(_metrics={"train": buffers})
    control = SimpleNamespace(should_training_stop=False)
    guard.on_train_begin(None, SimpleNamespace(global_step=0), control)
    for step, kl in enumerate([0.0, 0.1, 0.2, 0.3, 0.9], 1):
        buffers["kl"].append(kl)
        m.on_step_end(None, SimpleNamespace(global_step=step), control)
        if step == 4:  # logging_steps=4: the logged mean (0.15) stays under max_kl; the buffer empties
            assert not control.should_training_stop
            for cb in (guard, m):
                cb.on_log(None, SimpleNamespace(global_step=4), control, logs={"kl": 0.15})
            buffers["kl"].clear()
    assert control.should_training_stop and guard.stopped["step"] == 5
    assert last_safe_step(guard.stopped["window_start"]) == 3
    # the end-of-training log then averages step 5 alone: the same window, the same policy kept
    guard.on_log(None, SimpleNamespace(global_step=5), control, logs={"kl": 0.9})
    assert last_safe_step(guard.stopped["window_start"]) == 3


def test_cpu_defaults_are_fp32_without_checkpointing():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    gc = checkpointing_field()
    assert precision_kwargs("auto") == {"bf16": False, "fp16": False, gc: False, "use_cpu": True}
    assert precision_kwargs("auto", gradient_checkpointing=True)[gc] is True
    with pytest.raises(ValueError, match="precision=bf16 needs a GPU"):
        precision_kwargs("bf16")


def test_rewards_follow_the_recipe():
    r = load_recipe(None, ["rewards.cosine.weight=2", "rewards.cosine.unit=chars", "rewards.cosine.max_len=3000",
                           "grpo.num_generations=4"])
    funcs, weights = build_rewards(r)
    assert [f.__name__ for f in funcs] == ["format", "cosine", "length", "accuracy"]
    assert weights == [1.0, 2.0, 1.0, 0.0]  # accuracy is logged, never trained on
    assert funcs[1].unit == "chars" and funcs[1].max_len == 3000 and funcs[2].group_size == 4


def test_gpu_checkpointing_follows_the_memory_plan(monkeypatch):
    """On a GPU, unset gradient checkpointing is on only when the plan says the stage needs it (a 14B at 24k tokens
    on 8 x H200 does; the toy does not)."""
    import mathrecipe.plan as plan_mod
    from mathrecipe.plan import checkpointing_needed

    real = plan_mod.check_fits
    monkeypatch.setattr(plan_mod, "check_fits", lambda r: real(r, gpus=8, gpu_mem_gib=141))
    paper = load_recipe(str(__import__("pathlib").Path(__file__).parents[1] / "recipes/paper/fast-math-r1-14b.yaml"))
    assert checkpointing_needed(paper, "sft") is True  # 314 GiB of activations without it
    assert checkpointing_needed(load_recipe(None), "sft") is False
    assert checkpointing_needed(load_recipe(None), "grpo") is False
    monkeypatch.setattr(plan_mod, "check_fits", lambda r: real(r))  # no GPU to judge against: keep it on
    assert checkpointing_needed(load_recipe(None), "sft") is True


def _fake_liger(monkeypatch, installed: bool) -> None:
    """liger-kernel installed (a stand-in module patching llama and qwen2) or absent, whatever this machine has."""
    import importlib.machinery
    import sys
    import types

    if not installed:
        monkeypatch.setitem(sys.modules, "liger_kernel", None)  # find_spec -> None, import -> ImportError
        return
    names = ["liger_kernel", "liger_kernel.transformers", "liger_kernel.transformers.monkey_patch"]
    for name in names:
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, mod)
    sys.modules[names[-1]].MODEL_TYPE_TO_APPLY_LIGER_FN = {"llama": None, "qwen2": None}


@pytest.mark.parametrize("cuda, installed, model_type, expected", [
    (True, True, "llama", True),  # every condition holds
    (True, True, "qwen2", True),
    (True, True, "toy-llama-x", False),  # a model type liger does not patch
    (True, True, None, False),  # model type unknown
    (False, True, "llama", False),  # no CUDA
    (True, False, "llama", False),  # liger-kernel not installed (a GPU extra)
])
def test_liger_needs_cuda_the_package_and_a_patched_model_type(monkeypatch, cuda, installed, model_type, expected):
    """The rule with the environment mocked, so it holds on any machine (a GPU one with liger installed too)."""
    import mathrecipe.hardware as hardware

    monkeypatch.setattr(hardware, "has_cuda", lambda: cuda)
    _fake_liger(monkeypatch, installed)
    assert hardware.liger_supported(model_type) is expected


def test_cpu_rollouts_use_a_static_cache_only_when_it_fits(tmp_path, monkeypatch):
    import torch

    from mathrecipe.grpo import grpo_args
    from mathrecipe.recipe import load_recipe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CPU rollouts, whatever this machine has

    assert grpo_args(load_recipe(None), tmp_path)["cache_implementation"] == "static"  # the toy: ~0.3 GB
    # the paper's 1.5B recipe with HF rollouts, 16 completions of 16k tokens: ~16 GB in fp32, the growing cache stays
    root = Path(__file__).resolve().parents[1]
    big = load_recipe(root / "recipes" / "paper" / "fast-math-r1-1.5b.yaml",
                      ["grpo.backend=hf", "grpo.per_device_train_batch_size=16", "grpo.precision=auto"])
    assert "cache_implementation" not in grpo_args(big, tmp_path)


def test_stage_configs_raise_no_deprecation_warning_of_their_own(tmp_path):
    """The stages pass gradient checkpointing under the name the installed transformers wants (5.23+ warns with a
    FutureWarning on ``gradient_checkpointing``, which a person reading `mathrecipe run` saw twice)."""
    import warnings

    from trl import GRPOConfig, SFTConfig

    from mathrecipe.grpo import grpo_args
    from mathrecipe.sft import sft_args

    recipe = load_recipe(None)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        SFTConfig(**sft_args(recipe, tmp_path / "sft"))
        GRPOConfig(**grpo_args(recipe, tmp_path / "grpo"))
    assert [str(w.message) for w in seen if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []
