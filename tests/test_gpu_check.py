"""bench/gpu_check.sh: the dry run goes through every part on CPU, and the report says what was measured where."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _probe():
    spec = importlib.util.spec_from_file_location("gpu_probe", ROOT / "bench" / "gpu_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mfu_formula_reproduces_the_reference_numbers():
    """6 P + 6 L h s per token against 989 TFLOP/s gives the MFU the H200 reference reported for its tokens/s."""
    from mathrecipe.plan import BUILTIN_SHAPES

    probe = _probe()
    s = BUILTIN_SHAPES["Qwen/Qwen2.5-1.5B"]
    for row in probe.REFERENCE_H200["sft"]:
        got = probe.mfu(row["tokens_per_s"], s.params, s.layers, s.hidden, 8192)
        assert round(got, 2) == row["mfu"]


def test_report_from_parts_says_what_ran_and_what_timed_out(tmp_path):
    probe = _probe()
    work = tmp_path / "work"
    work.mkdir()
    (work / "env.status").write_text("0 3.1")
    (work / "tests.status").write_text("1 80.0")
    (work / "tests.log").write_text("collecting\nFAILED tests/test_x.py::test_y\n1 failed, 2 passed\n")
    (work / "junit.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="0">'
        '<testcase classname="tests.test_x" name="test_y"><failure message="boom"/></testcase>'
        '<testcase classname="tests.test_x" name="test_z"/><testcase classname="tests.test_x" name="test_w"/>'
        "</testsuite></testsuites>")
    (work / "toy.status").write_text("124 260.0")
    ckpt = work / "toy" / "sft" / "checkpoint-500"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 500, "epoch": 4.0}))
    (work / "sft.status").write_text("0 60.0")
    (work / "sft.json").write_text(json.dumps({
        "shape": {"num_hidden_layers": 28, "hidden_size": 1536}, "params": 1_543_714_304, "tokens_per_row": 8192,
        "variants": [{"setting": "defaults", "tokens_per_s": 13000.0, "mfu": 0.149, "peak_allocated_gib": 27.5,
                      "weights_dtype": "float32", "run_seconds": 40.0}]}))
    probe.main(["report", "--work", str(work), "--out", str(tmp_path / "out")])
    report = json.loads((tmp_path / "out" / "gpu.json").read_text())
    here = report["measured_here"]
    assert here["tests"]["status"] == "failed" and here["tests"]["failed"] == 1 and here["tests"]["passed"] == 2
    assert here["tests"]["failing"] == ["tests.test_x::test_y"] and "1 failed, 2 passed" in here["tests"]["log_tail"]
    assert here["toy"]["status"] == "timed out" and here["toy"]["reached"]["global_step"] == 500
    assert here["grpo"]["status"] == "not run"
    md = (tmp_path / "out" / "gpu.md").read_text()
    assert "| toy recipe (seed 0) | timed out |" in md and "13,000 tokens/s" in md
    assert "reported from an earlier H200 session; not rerun here" in md and "| 13,200 | 0.15 | 27 GiB |" in md


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("MATHRECIPE_GPU_CHECK")), reason="already inside a GPU check run")
def test_dry_run_runs_every_part_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu.json").read_text())
    here = report["measured_here"]
    assert here["dry_run"] and here["where"].startswith("CPU")
    assert all(here[p]["status"] == "ok" for p in ("tests", "toy", "sft", "grpo"))
    assert here["tests"]["collected"] > 50
    assert here["toy"]["report"]["grpo"]["steps"] == 1
    (v,) = here["sft"]["variants"]
    assert v["setting"] == "project defaults" and v["steps_timed"] >= 1 and v["tokens_per_s"] > 0
    assert v["weights_dtype"] == "float32" and v["gradient_checkpointing"] is False  # the project's CPU defaults
    g = here["grpo"]
    assert g["steps_timed"] == 1 and 0 < g["generation_share"] < 1
    md = (tmp_path / "out" / "gpu.md").read_text()
    assert "dry run" in md and "not rerun here" in md
    assert not (ROOT / "bench" / "results" / "gpu.md.tmp").exists()
