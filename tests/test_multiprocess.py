"""`mathrecipe run` under a real 2-process launch (CPU, gloo): one report, every stage, no file written twice."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_run

HERE = Path(__file__).resolve().parent
TINY = tiny_run(32, 6, 32, 4, "sft.epochs=2", "sft.per_device_train_batch_size=4", "eval.samples=2",
                "eval.max_new_tokens=24", "grpo.per_device_train_batch_size=8", "grpo.num_generations=4",
                "grpo.max_steps=2", "grpo.max_completion_length=24", "rewards.cosine.max_len=24")


@pytest.mark.slow
def test_two_process_run_end_to_end(tmp_path):
    out, log = tmp_path / "run", tmp_path / "audit.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", MATHRECIPE_AUDIT_DIR=str(out), MATHRECIPE_AUDIT_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(HERE / "audit"), os.environ.get("PYTHONPATH", "")]))
    # `--multi_gpu` with use_cpu is real 2-process CPU DDP (`--cpu --num_processes 2` starts one process)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "mathrecipe.cli", "-q", "run", f"output_dir={out}", *TINY]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["processes"] == 2
    assert [e["epoch"] for e in report["sft"]["epochs"]] == [1, 2]
    assert all(e["accuracy"] is not None for e in report["sft"]["epochs"])
    assert report["sft"]["steps"] == 2 * 32 // (4 * 2)  # both ranks trained: the global batch is 8
    assert report["grpo"]["steps"] == 2 and report["grpo"]["accuracy"] is not None
    for name in ("eval/grpo.samples.jsonl", "sft/eval-epoch1.samples.jsonl", "sft/eval-epoch2.samples.jsonl"):
        rows = [json.loads(x) for x in (out / name).read_text().splitlines()]
        keys = [(r["id"], r["sample"]) for r in rows]
        assert len(keys) == len(set(keys)) == 6 * 2, name  # every problem x sample exactly once
    # one report, printed once (by rank 0)
    assert (done.stdout + done.stderr).count("Report: ") == 1
    written = {r: log.with_name(f"{log.name}.{r}").read_text().splitlines()
               if log.with_name(f"{log.name}.{r}").exists() else [] for r in (0, 1)}
    assert written[0], "the audit hook saw no writes: the test is not measuring anything"
    assert not set(written[0]) & set(written[1]), "files written by both ranks"
    assert not [p for p in written[1] if not Path(p).name.startswith("rng_state")], written[1]
