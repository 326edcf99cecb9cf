"""A typo in a path or an unreachable hub costs seconds, not a training run: one line, before anything loads."""

import os
import subprocess
import sys
import time

import pytest

SHARED_BENCH = "aime2024.jsonl"


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mathrecipe.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def _one_line(done):
    assert done.returncode == 2, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("mathrecipe: error:") and "Traceback" not in done.stderr
    return lines[0]


def test_missing_grpo_file_fails_in_seconds_before_sft(tmp_path, tiny_model_dir, shared_data):
    bench = shared_data / "benchmarks" / SHARED_BENCH
    done = _cli("run", f"output_dir={tmp_path / 'run'}", "data.source=files", f"data.sft_path={bench}",
                f"data.test_path={bench}", "data.grpo_path=MISSING.jsonl", f"model.name_or_path={tiny_model_dir}")
    assert "data.grpo_path" in _one_line(done) and "no such file or folder" in done.stderr
    assert not (tmp_path / "run").exists()  # before SFT: nothing written (the proof, not a wall-clock bound)


def test_a_path_set_for_the_toy_is_a_mistake_not_ignored(tmp_path):
    done = _cli("run", f"output_dir={tmp_path / 'run'}", "data.grpo_path=MISSING")
    assert "data.grpo_path is read only with data.source=files" in _one_line(done)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model, env, words", [
    ("./no/such", {}, ["--model", "./no/such", "no such file or folder"]),
    ("runs/x/finall", {}, ["no such file or folder"]),
    ("someorg/some-model", {"HF_HUB_OFFLINE": "1"}, ["someorg/some-model", "HF_HUB_OFFLINE"]),
    ("someorg/some-model", {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": ""}, ["cannot be reached"]),
])
def test_bad_models_fail_in_seconds_with_one_line(tmp_path, shared_data, model, env, words):
    t = time.monotonic()
    done = _cli("eval", "--model", model, "--benchmarks", "aime24", "--data-dir", str(shared_data / "benchmarks"),
                "--out", str(tmp_path / "o"), env=env)
    # "in seconds" is the behaviour (an unreachable hub would otherwise cost minutes of retries); 30 s leaves a
    # loaded 2-core machine room for the interpreter's start and imports (~3 s quiet)
    assert time.monotonic() - t < 30
    line = _one_line(done)
    for w in words:
        assert w in line, line
    assert not (tmp_path / "o").exists()
