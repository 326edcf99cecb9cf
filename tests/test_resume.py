"""Runs survive kill -9: a rerun of the same command resumes from the last complete checkpoint and finishes with
the full step count and one report; half-written checkpoints are never taken for checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import tiny_run

from mathrecipe.checkpoints import COMPLETE_MARKER, last_complete_checkpoint

TINY = tiny_run(64, 4, 32, 4, "sft.per_device_train_batch_size=4", "sft.logging_steps=4", "sft.epochs=3",
                "eval.samples=1", "eval.max_new_tokens=24", "grpo.per_device_train_batch_size=8",
                "grpo.num_generations=4", "grpo.max_completion_length=24", "rewards.cosine.max_len=24",
                "grpo.logging_steps=1")


def _cmd(out, *extra):
    code = "import sys; from mathrecipe.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, "-q", "run", f"output_dir={out}", *TINY, *extra]


def _kill_when(cmd, ready, timeout=240):
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` holds; True if it was killed mid-run."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                return False
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.05)
        raise AssertionError("the run never reached the kill point")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_kill_9_mid_sft_then_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = _cmd(out, "grpo.enabled=false")
    assert _kill_when(cmd, lambda: (out / "sft" / "checkpoint-16" / COMPLETE_MARKER).exists())
    assert not (out / "report.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["resumed"]["sft"].endswith(("checkpoint-16", "checkpoint-32"))  # not from scratch
    assert report["sft"]["steps"] == 48  # 64 rows / 4 x 3 epochs: the full count
    assert [e["epoch"] for e in report["sft"]["epochs"]] == [1, 2, 3]
    assert all(e.get("accuracy") is not None for e in report["sft"]["epochs"])
    assert sorted(p.name for p in (out / "sft").glob("checkpoint-*")) == ["checkpoint-16", "checkpoint-32",
                                                                       "checkpoint-48"]
    # a finished stage is not run again
    again = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert again.returncode == 0
    again_report = json.loads((out / "report.json").read_text())
    assert again_report["reused"] == ["sft"] and again_report["resumed"] == report["resumed"]  # the real checkpoint


@pytest.mark.slow
def test_kill_9_mid_grpo_then_rerun_continues_at_the_right_step_lr_and_health(tmp_path):
    import torch
    from transformers import get_cosine_schedule_with_warmup

    out = tmp_path / "run"
    cmd = _cmd(out, "sft.epochs=1", "grpo.max_steps=6", "grpo.save_steps=2", "grpo.lr_scheduler=cosine",
               "grpo.learning_rate=1e-3")
    assert _kill_when(cmd, lambda: (out / "grpo" / "checkpoint-2" / COMPLETE_MARKER).exists())
    assert not (out / "grpo" / "final").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    resumed = report["resumed"]["grpo"]
    assert resumed.endswith(("checkpoint-2", "checkpoint-4"))
    assert report["grpo"]["steps"] == 6  # the uninterrupted run's step count
    state = json.loads((out / "grpo" / "checkpoint-6" / "trainer_state.json").read_text())
    logged = {h["step"]: h["learning_rate"] for h in state["log_history"] if "learning_rate" in h}
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]  # every step once, none repeated or lost
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = get_cosine_schedule_with_warmup(opt, 0, 6)
    expected = {}
    for step in range(1, 7):
        expected[step] = sched.get_last_lr()[0]
        opt.step()
        sched.step()
    assert logged == pytest.approx(expected)  # the resumed steps continue the schedule where it stopped
    # health: every step once, the steps before the resume restored from the checkpoint it resumed from
    health = report["grpo"]["health"]
    assert [r["step"] for r in health["steps"]] == [1, 2, 3, 4, 5, 6]
    assert all({"mean_length", "truncation", "kl", "entropy", "reward_format"} <= set(r) for r in health["steps"])
    saved = json.loads((Path(resumed) / "mathrecipe_health.json").read_text())["steps"]
    assert health["steps"][: len(saved)] == saved
    assert health["judged"]["missing_steps"] == [] and health["judged"]["restored_from"] == resumed
    md = (out / "report.md").read_text()
    assert "Resumed: sft from" not in md and f"grpo from {resumed}" in md
    # a rerun of the finished run says where GRPO resumed, and that it was reused
    again = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert again.returncode == 0, again.stderr[-3000:]
    again_report = json.loads((out / "report.json").read_text())
    assert again_report["resumed"] == {"grpo": resumed} and again_report["reused"] == ["sft", "grpo"]
    assert again_report["grpo"]["health"]["steps"] == health["steps"]


def test_incomplete_checkpoint_is_skipped_with_a_log_line(tmp_path, caplog):
    for step in (10, 20):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-10" / COMPLETE_MARKER).write_text("{}")
    (tmp_path / "checkpoint-20" / "config.json").write_text("{}")  # killed mid-save: no weights, no marker
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert "checkpoint-20 is incomplete" in caplog.text
    assert last_complete_checkpoint(tmp_path, before_step=5) is None


def test_loading_a_half_written_model_folder_names_the_missing_weights(tmp_path):
    from mathrecipe.modeling import ModelError, check_model_folder

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "generation_config.json").write_text("")
    with pytest.raises(ModelError, match="missing weights") as e:
        check_model_folder(tmp_path)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    idx = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(idx))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError, match="model-00002-of-00002.safetensors"):
        check_model_folder(Path(tmp_path))
