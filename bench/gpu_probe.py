"""The probes behind bench/gpu_check.sh: environment, SFT throughput, GRPO step time, and the report.

Each probe trains through the project's own stage code (``mathrecipe.sft.run_sft``, ``mathrecipe.grpo.run_grpo``,
which take their precision and checkpointing defaults from ``mathrecipe.hardware``), so it measures what a user's run
gets. The only addition is timing: the TRL trainer classes those stages import are wrapped to time each optimizer
step (and, for GRPO, each generation) with CUDA synchronised.

    python bench/gpu_probe.py env  --out DIR
    python bench/gpu_probe.py sft  --out DIR [--dry-run]     # Qwen2.5-1.5B shape, packed 8,192-token rows
    python bench/gpu_probe.py grpo --out DIR [--dry-run]     # same shape, 8 prompts x 8 completions of 512 tokens
    python bench/gpu_probe.py report --work DIR --out DIR    # gpu.json + gpu.md from the parts

MFU = tokens/s x (6 P + 6 L h s) / 989 TFLOP/s (H100/H200 dense bf16): 6 P for the parameters' forward and
backward, 6 L h s for causal attention (half of PaLM's 12 L h s), recomputation not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PEAK_BF16_FLOPS = 989e12
GIB = 2**30

# Qwen2.5-1.5B's shape as a Llama (a Qwen2 config would swap in Qwen's tokenizer class under transformers 5)
FULL = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
            intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=512, tie_word_embeddings=True, max_position_embeddings=1024)

# Measured on one H200 earlier (not rerun here); bench/results/gpu.md quotes them.
REFERENCE_H200 = {
    "source": "reported from an earlier H200 session; not rerun here",
    "sft": [
        {"setting": "bf16 autocast + gradient checkpointing + sdpa", "tokens_per_s": 13200, "mfu": 0.15,
         "peak_gib": 27},
        {"setting": "gradient checkpointing off", "tokens_per_s": 15100, "mfu": 0.17, "peak_gib": 54},
        {"setting": "gradient checkpointing off + Liger kernels", "tokens_per_s": 20700, "mfu": 0.24,
         "peak_gib": 47},
    ],
    "grpo": {"setting": "HF generate, 8 prompts x 8 completions of 512 tokens", "seconds_per_step": "14-15"},
}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _write(path: Path, obj: Any) -> None:
    """Atomic JSON write (temp file + rename): a killed probe leaves the old file or none, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def flops_per_token(params: int, layers: int, hidden: int, seq: int) -> float:
    """6 P + 6 L h s: forward + backward of the weights, plus causal attention scores and values."""
    return 6 * params + 6 * layers * hidden * seq


def mfu(tokens_per_s: float, params: int, layers: int, hidden: int, seq: int) -> float:
    """Model FLOPs utilisation against 989 TFLOP/s dense bf16."""
    return tokens_per_s * flops_per_token(params, layers, hidden, seq) / PEAK_BF16_FLOPS


# ------------------------------------------------------------------------------------------------ env


def probe_env() -> dict[str, Any]:
    """Python, torch, the GPU, and the versions of the packages the project pins (a mismatch is listed)."""
    from importlib import metadata

    import torch

    want = {"transformers": "5.24.0", "trl": "1.16.0", "datasets": "5.2.0", "accelerate": "1.15.0",
            "math-verify": "0.9.0", "liger-kernel": "0.8.5"}
    versions: dict[str, str | None] = {}
    for name in [*want, "torch", "tokenizers", "huggingface-hub", "pyarrow", "fsspec", "vllm"]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "versions": versions, "cuda": torch.cuda.is_available(),
                           "mismatches": [f"{k} {versions[k] or 'not installed'} (tested: {v})" for k, v in want.items()
                                          if versions[k] != v]}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=round(p.total_memory / GIB, 1),
                   cuda_version=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
    return env


# ------------------------------------------------------------------------------------------------ shared


def build_model_folder(out: Path, shape: dict[str, int | bool], seed: int = 0) -> Path:
    """A random-init Llama of ``shape`` with the toy tokenizer, saved like a hub checkpoint (bf16 on a GPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mathrecipe.toy import IM_END, PAD, build_tokenizer, make_toy_data, toy_corpus

    if (out / "config.json").is_file():
        return out
    tok = build_tokenizer(toy_corpus(make_toy_data(200, 10, 50, seed=seed)), vocab_size=300)
    torch.manual_seed(seed)
    eos, pad = tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(PAD)
    config = LlamaConfig(**shape, eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
    with torch.device("cuda" if _cuda() else "cpu"):  # a 1.5B random init is much faster on the GPU
        model = LlamaForCausalLM(config)
    if _cuda():  # hub checkpoints are bf16; the project's loader decides what training gets
        model = model.to(torch.bfloat16)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = eos, pad
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


class _Timer:
    """Per optimizer step wall time (CUDA synchronised) and peak memory of the whole run."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
                if model is not None:
                    timer.param_dtype = str(next(model.parameters()).dtype).replace("torch.", "")
                    name = ("is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing")
                            else "is_gradient_checkpointing")  # transformers 5.23 renamed it (the old name warns)
                    timer.checkpointing = bool(getattr(model, name, False))

            def on_step_begin(self, *a: Any, **kw: Any) -> None:
                _sync()
                timer._t0 = time.perf_counter()

            def on_step_end(self, *a: Any, **kw: Any) -> None:
                _sync()
                timer.steps.append(time.perf_counter() - timer._t0)

        self.callback = Callback()
        self.steps: list[float] = []
        self.generation: list[float] = []
        self.param_dtype = ""
        self.checkpointing = False
        self._t0 = 0.0


def _patch_trainer(name: str, timer: _Timer) -> Any:
    """Wrap ``trl.<name>`` so the stage's own trainer gets the timer (restored by the caller)."""
    import trl

    original = getattr(trl, name)

    class Timed(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, callbacks: list | None = None, **kw: Any) -> None:
            super().__init__(*args, callbacks=[*(callbacks or []), timer.callback], **kw)

        def _generate(self, *args: Any, **kw: Any) -> Any:  # GRPO only: time the rollout
            _sync()
            t0 = time.perf_counter()
            out = super()._generate(*args, **kw)
            _sync()
            timer.generation.append(time.perf_counter() - t0)
            return out

    setattr(trl, name, Timed)
    return original


def _peak() -> dict[str, float | None]:
    if _cuda():
        import torch

        return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
                "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2)}
    return {"peak_allocated_gib": None, "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                              * 1024 / GIB, 2)}


def _reset_peak() -> None:
    if _cuda():
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ------------------------------------------------------------------------------------------------ SFT


def sft_variants(dry_run: bool) -> list[tuple[str, list[str]]]:
    """(name, recipe overrides): on a GPU, one row per lever measured side by side, from the earlier defaults
    (bf16 autocast + gradient checkpointing, no Liger) to what the project now picks by itself; on CPU (dry run)
    the project's defaults only."""
    if dry_run or not _cuda():
        return [("project defaults", [])]
    out = [("baseline: checkpointing on, no Liger", ["sft.gradient_checkpointing=true", "sft.use_liger_kernel=false"]),
           ("checkpointing off", ["sft.gradient_checkpointing=false", "sft.use_liger_kernel=false"])]
    try:
        import liger_kernel  # noqa: F401

        out.append(("checkpointing off + Liger kernels",
                    ["sft.gradient_checkpointing=false", "sft.use_liger_kernel=true"]))
    except ImportError:
        pass
    return out + [("project defaults (plan decides checkpointing; Liger where supported)", [])]


def probe_sft(work: Path, dry_run: bool) -> dict[str, Any]:
    """tokens/s, MFU and peak memory of packed SFT rows through ``run_sft`` with the project's defaults."""
    from mathrecipe.plan import shape_from_config
    from mathrecipe.recipe import load_recipe
    from mathrecipe.sft import run_sft

    shape = TINY if dry_run else FULL
    seq = 128 if dry_run else 8192
    warmup, measured = (0, 1) if dry_run else (2, 5)
    model_dir = build_model_folder(work / "model", shape)
    dims = shape_from_config(json.loads((model_dir / "config.json").read_text()), "probe")
    rng = random.Random(0)
    rows = [{"prompt": [{"role": "user", "content": "Compute."}],
             "completion": [{"role": "assistant", "content": "".join(rng.choice("0123456789")
                                                                     for _ in range(seq + 64))}]}
            for _ in range(warmup + measured)]
    from mathrecipe.data.io import write_jsonl

    data = write_jsonl(rows, work / "sft-rows.jsonl")
    results = []
    for name, overrides in sft_variants(dry_run):
        recipe = load_recipe(None, [
            f"output_dir={work / 'runs'}", "sft.epochs=1", "sft.per_device_train_batch_size=1", "sft.gradient_accumulation_steps=1",
            f"sft.max_length={seq}", "sft.packing=true", "sft.eval_each_epoch=false", "sft.save_only_model=true",
            "sft.warmup_steps=0", "sft.logging_steps=1", "data.system_prompt=null",
            "sft.extra={packing_strategy: wrapped}", *overrides])
        timer = _Timer()
        original = _patch_trainer("SFTTrainer", timer)
        _reset_peak()
        try:
            t0 = time.perf_counter()
            run_sft(recipe, str(model_dir), data, [], work / "runs" / f"sft-{len(results)}")
            wall = time.perf_counter() - t0
        finally:
            import trl

            trl.SFTTrainer = original
        timed = timer.steps[warmup:] or timer.steps
        step_s = statistics.median(timed)
        tps = seq / step_s
        results.append({"setting": name, "overrides": overrides, "steps_timed": len(timed),
                        "seconds_per_step": round(step_s, 4), "tokens_per_s": round(tps, 1),
                        "mfu": round(mfu(tps, dims.params, dims.layers, dims.hidden, seq), 4),
                        "weights_dtype": timer.param_dtype, "gradient_checkpointing": timer.checkpointing,
                        "run_seconds": round(wall, 1), **_peak()})
    return {"shape": shape, "params": dims.params, "tokens_per_row": seq, "rows_per_step": 1,
            "dry_run": dry_run, "device": "cuda" if _cuda() else "cpu", "variants": results}


# ------------------------------------------------------------------------------------------------ GRPO


def probe_grpo(work: Path, dry_run: bool) -> dict[str, Any]:
    """Seconds per GRPO step and the generation share, through ``run_grpo`` with the project's defaults."""
    from mathrecipe.data.io import write_jsonl
    from mathrecipe.grpo import run_grpo
    from mathrecipe.recipe import load_recipe
    from mathrecipe.toy import make_toy_data

    shape = TINY if dry_run else FULL
    prompts, gens, tokens = (2, 4, 16) if dry_run else (8, 8, 512)
    warmup, measured = (0, 1) if dry_run else (1, 2)
    model_dir = build_model_folder(work / "model", shape)
    problems = make_toy_data(10, 10, prompts * (warmup + measured) * 2, seed=0).grpo
    data = write_jsonl([{"prompt": p["problem"], "answer": p["answer"]} for p in problems], work / "grpo.jsonl")
    recipe = load_recipe(None, [
        f"output_dir={work / 'runs'}", f"grpo.num_generations={gens}", f"grpo.per_device_train_batch_size={prompts * gens}",
        "grpo.gradient_accumulation_steps=1", f"grpo.max_steps={warmup + measured}",
        f"grpo.max_completion_length={tokens}", f"rewards.cosine.max_len={tokens}", "grpo.max_kl=null",
        "grpo.logging_steps=1"])
    timer = _Timer()
    original = _patch_trainer("GRPOTrainer", timer)
    _reset_peak()
    try:
        t0 = time.perf_counter()
        run_grpo(recipe, str(model_dir), data, work / "runs" / "grpo")
        wall = time.perf_counter() - t0
    finally:
        import trl

        trl.GRPOTrainer = original
    steps = timer.steps[warmup:] or timer.steps
    gen = timer.generation[warmup:] or timer.generation
    step_s = statistics.median(steps)
    gen_s = statistics.median(gen) if gen else None
    return {"shape": shape, "prompts_per_step": prompts, "completions_per_prompt": gens,
            "max_completion_tokens": tokens, "dry_run": dry_run, "device": "cuda" if _cuda() else "cpu",
            "steps_timed": len(steps), "seconds_per_step": round(step_s, 3),
            "generation_seconds_per_step": None if gen_s is None else round(gen_s, 3),
            "generation_share": None if gen_s is None else round(gen_s / step_s, 3),
            "weights_dtype": timer.param_dtype, "run_seconds": round(wall, 1), **_peak()}


# ------------------------------------------------------------------------------------------------ report


def _status(work: Path, part: str) -> dict[str, Any]:
    """The shell's record of a part: exit code and seconds (124: stopped by its time box)."""
    f = work / f"{part}.status"
    if not f.is_file():
        return {"status": "not run"}
    rc, secs = f.read_text().split()
    rc_i = int(rc)
    out: dict[str, Any] = {"status": "ok" if rc_i == 0 else ("timed out" if rc_i in (124, 137) else "failed"),
                           "exit_code": rc_i, "seconds": float(secs)}
    log = work / f"{part}.log"
    if rc_i != 0 and log.is_file():  # enough to see why, without the progress bars
        lines = [ln for ln in re.split(r"[\r\n]+", log.read_text(errors="replace")) if ln.strip()]
        out["log_tail"] = lines[-15:]
    return out


def _tests(work: Path) -> dict[str, Any]:
    out = _status(work, "tests")
    junit = work / "junit.xml"
    if junit.is_file():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        if suite is not None:
            n, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
            out.update(tests=n, passed=n - f - e - s, failed=f, errors=e, skipped=s,
                       failing=[f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                                if c.find("failure") is not None or c.find("error") is not None][:20])
    log = work / "tests.log"
    if log.is_file():
        m = re.search(r"(\d+) tests? collected", log.read_text())
        if m:
            out["collected"] = int(m.group(1))
    return out


def _toy(work: Path) -> dict[str, Any]:
    out = _status(work, "toy")
    report = work / "toy" / "report.json"
    if report.is_file():
        r = json.loads(report.read_text())
        out["report"] = {k: r.get(k) for k in ("start", "grpo", "timings_s")}
        out["report"]["sft_selected_epoch"] = (r.get("sft") or {}).get("selected_epoch")
    else:
        states = sorted((work / "toy").glob("*/checkpoint-*/trainer_state.json"))
        if states:  # stopped by its time box: how far it got
            last = json.loads(states[-1].read_text())
            out["reached"] = {"checkpoint": str(states[-1].parent.relative_to(work)),
                              "global_step": last.get("global_step"), "epoch": last.get("epoch")}
    return out


def _part(work: Path, name: str) -> dict[str, Any]:
    out = _status(work, name)
    f = work / f"{name}.json"
    if f.is_file():
        out.update(json.loads(f.read_text()))
    return out


def plan_estimate() -> dict[str, float]:
    """``mathrecipe plan``'s estimate of the reference SFT setting (allocator peak, without the CUDA context)."""
    from mathrecipe.plan import CUDA_CONTEXT_GIB, Target, plan_recipe
    from mathrecipe.recipe import load_recipe

    base = ["model.name_or_path=Qwen/Qwen2.5-1.5B", "data.source=files", "data.sft_path=x", "data.grpo_path=x",
            "data.test_path=x", "sft.per_device_train_batch_size=1", "sft.max_length=8192", "sft.packing=true", "sft.precision=bf16",
            "grpo.enabled=false"]
    target = Target(gpus=1, gpu_mem_gib=141, gpu=True)
    out = {}
    for name, extra in (("gradient checkpointing", []), ("no checkpointing", ["sft.gradient_checkpointing=false"])):
        total = plan_recipe(load_recipe(None, [*base, *extra]), target).stage("sft").total_gib
        out[name] = round(total - CUDA_CONTEXT_GIB, 1)
    return out


def build_report(work: Path, dry_run: bool) -> dict[str, Any]:
    env = json.loads((work / "env.json").read_text()) if (work / "env.json").is_file() else {}
    where = (f"{env.get('gpu')} x{env.get('gpu_count')}, CUDA {env.get('cuda_version')}" if env.get("cuda")
             else f"CPU ({platform.processor() or platform.machine()}), tiny shapes: checks the script, not speed")
    started = os.environ.get("GPU_CHECK_START")
    total = round(time.time() - float(started)) if started else None
    return {"measured_here": {"where": where, "dry_run": dry_run, "total_seconds": total,
                              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "env": env,
                              "tests": _tests(work), "toy": _toy(work), "sft": _part(work, "sft"),
                              "grpo": _part(work, "grpo")},
            "reference_h200": REFERENCE_H200, "plan_estimate_of_reference_sft_gib": plan_estimate()}


def _gib_text(x: float | None) -> str:
    return "n/a (CPU)" if x is None else f"{x:.1f} GiB"


def render_md(report: dict[str, Any]) -> str:
    """gpu.md: a view of gpu.json."""
    m, ref = report["measured_here"], report["reference_h200"]
    dry = " (dry run: every part for one step on tiny shapes)" if m["dry_run"] else ""
    total = f", {m['total_seconds']} s in all" if m.get("total_seconds") else ""
    lines = ["# GPU check", "",
             "`bench/gpu_check.sh` (one time-boxed run, <= 8 minutes: test suite, toy recipe, SFT throughput probe, "
             "GRPO step probe) wrote this from `gpu.json`.", "",
             f"## Measured by the last run: {m['where']}", "", f"Run {m['date']}{dry}{total}.", ""]
    env = m.get("env") or {}
    if env:
        v = env.get("versions", {})
        lines.append("Versions: " + ", ".join(f"{k} {v[k]}" for k in sorted(v) if v[k]) + ".")
        if env.get("mismatches"):
            lines.append("Differs from the tested versions: " + "; ".join(env["mismatches"]) + ".")
        lines.append("")
    t = m["tests"]
    tests = (f"{t.get('passed')} passed, {t.get('failed')} failed, {t.get('errors')} errors, {t.get('skipped')} "
             f"skipped" if "tests" in t else f"{t.get('collected', '?')} collected")
    lines += ["| part | status | seconds | result |", "|---|---|---|---|",
              f"| test suite | {t['status']} | {t.get('seconds', '')} | {tests} |"]
    toy = m["toy"]
    if "report" in toy:
        g = toy["report"].get("grpo") or {}
        st = toy["report"].get("start") or {}
        res = (f"start ({st.get('name')}) accuracy {st.get('accuracy')}, {st.get('mean_tokens')} tokens -> GRPO "
               f"{g.get('accuracy')}, {g.get('mean_tokens')} tokens")
    else:
        res = f"reached {toy['reached']}" if "reached" in toy else ""
    lines.append(f"| toy recipe (seed 0) | {toy['status']} | {toy.get('seconds', '')} | {res} |")
    sft = m["sft"]
    for v in sft.get("variants", []):
        mem = v.get("peak_allocated_gib")
        lines.append(f"| SFT probe: {v['setting']} | {sft['status']} | {v['run_seconds']} | "
                     f"{v['tokens_per_s']:,.0f} tokens/s, MFU {v['mfu']:.3f}, peak "
                     f"{_gib_text(mem)}, weights {v['weights_dtype']} |")
    if not sft.get("variants"):
        lines.append(f"| SFT probe | {sft['status']} | {sft.get('seconds', '')} | |")
    g = m["grpo"]
    if "seconds_per_step" in g:
        lines.append(f"| GRPO probe | {g['status']} | {g['run_seconds']} | {g['seconds_per_step']} s/step, "
                     f"generation {g['generation_share']:.0%} of it, {g['prompts_per_step']} prompts x "
                     f"{g['completions_per_prompt']} x {g['max_completion_tokens']} tokens |")
    else:
        lines.append(f"| GRPO probe | {g['status']} | {g.get('seconds', '')} | |")
    if sft.get("variants"):
        count = f"{sft['params'] / 1e9:.2f}B" if sft["params"] >= 1e9 else f"{sft['params'] / 1e6:.2f}M"
        lines += ["", f"SFT probe shape: {count} parameters "
                      f"({sft['shape']['num_hidden_layers']} layers, hidden {sft['shape']['hidden_size']}), "
                      f"packed rows of {sft['tokens_per_row']} tokens, one per step, through `run_sft`."]
    lines += ["", "## Reference: one H200, reported earlier, not rerun here", "",
              "Qwen2.5-1.5B-shaped Llama from random init, packed 8,192-token rows, one per step "
              f"({ref['source']}).", "",
              "| SFT setting | tokens/s | MFU | peak memory |", "|---|---|---|---|"]
    for r in ref["sft"]:
        lines.append(f"| {r['setting']} | {r['tokens_per_s']:,} | {r['mfu']} | {r['peak_gib']} GiB |")
    est = report["plan_estimate_of_reference_sft_gib"]
    lines += ["", f"GRPO ({ref['grpo']['setting']}): {ref['grpo']['seconds_per_step']} s per step.", "",
              f"`mathrecipe plan` estimates the same SFT setting at {est['gradient checkpointing']} GiB with "
              f"gradient checkpointing and {est['no checkpointing']} GiB without (allocator peak, CUDA context "
              "excluded); tests/test_plan.py keeps these within 10% of the reference.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["env", "sft", "grpo", "report"])
    p.add_argument("--work", type=Path, required=True, help="scratch folder shared by the parts")
    p.add_argument("--out", type=Path, help="report: where gpu.json and gpu.md go")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU, one step each")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.part == "env":
        _write(a.work / "env.json", probe_env())
    elif a.part == "sft":
        _write(a.work / "sft.json", probe_sft(a.work, a.dry_run))
    elif a.part == "grpo":
        _write(a.work / "grpo.json", probe_grpo(a.work, a.dry_run))
    else:
        out = a.out or ROOT / "bench" / "results"
        report = build_report(a.work, a.dry_run)
        _write(out / "gpu.json", report)
        tmp = out / "gpu.md.tmp"
        tmp.write_text(render_md(report))
        os.replace(tmp, out / "gpu.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
