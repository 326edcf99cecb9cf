"""`mathrecipe eval` killed with SIGKILL mid-run, then rerun: exactly problems x samples rows, none twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mathrecipe.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _args(model, bench, out):
    # batch 1 and 2 samples: chunks of 2 problems, so the file grows in several steps a kill can fall between
    return ["-q", "eval", "--model", str(model), "--benchmarks", str(bench), "--out", str(out), "--samples", "2",
            "--max-new-tokens", "48", "--temperature", "1.0", "--generate-batch-size", "1"]


def _lines(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _run_and_kill(args, samples, more_than, timeout=180):
    """Start the eval in a subprocess and SIGKILL it once samples.jsonl holds more than ``more_than`` lines."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "mathrecipe.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while _lines(samples) <= more_than:
            assert proc.poll() is None, "the eval ended before it could be killed"
            assert time.monotonic() < deadline, "the eval made no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    return _lines(samples)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun(tiny_model_dir, toy_splits, tmp_path):
    bench = tmp_path / "kb.jsonl"
    bench.write_text("".join(json.dumps({"id": f"k{i}", **r}) + "\n" for i, r in enumerate(toy_splits.test[:8])))
    out = tmp_path / "out"
    samples = out / "samples.jsonl"
    args = _args(tiny_model_dir, bench, out)
    first = _run_and_kill(args, samples, 0)  # killed after its first chunk, during the next
    assert 0 < first < 16
    assert main(args) == 0  # the same command again
    rows = [json.loads(x) for x in samples.read_text().splitlines()]
    keys = [(r["benchmark"], r["id"], r["sample"]) for r in rows]
    assert len(rows) == 16 and len(set(keys)) == 16
    assert {r["id"] for r in rows} == {f"k{i}" for i in range(8)}
    s = json.loads((out / "summary.json").read_text())["benchmarks"]["kb"]
    assert s["n_problems"] == 8 and s["samples"] == 2
