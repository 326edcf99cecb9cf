"""Training speed and peak memory on CPU: the project's settings against a COMPETENT TRL configuration and TRL's
CPU defaults, on the real SmolLM2-135M-Instruct (size matters for training speed; `--model toy` for the 1.1M toy).

Settings (every one on the same tokenised rows, the same batch and learning rate; only trainer flags differ):
  trl_defaults    TRL 1.16's defaults on CPU: bf16 autocast, gradient checkpointing, fused AdamW
  trl_competent   what a competent user sets on CPU: fp32, no checkpointing, the optimizer the project runs
                  (adamw_torch); GRPO with transformers' default (growing) KV cache
  mathrecipe      what `mathrecipe sft/grpo` runs (sft_args / grpo_args from the recipe): for GRPO on CPU the same
                  flags plus a preallocated (static) KV cache for rollouts
  mathrecipe_packed  (SFT) the same plus packing (TRL's bfd, padding-free): no pad tokens are computed
SFT reports tokens/s over real (non-pad) tokens; GRPO seconds per step (rollouts included) and where they go.

Each (setting, repeat) runs in its own process, so its peak memory (max RSS: model, optimizer, activations, KV
cache) is its own; settings alternate within each repeat so that machine load hits all alike; every timing is
given as min / median / max over the repeats, with /proc/loadavg before and after each measurement.

    python bench/bench_train.py [--model real|toy] [--sft-steps 8] [--grpo-steps 3] [--defaults-steps 2]
                                [--repeats 3] [--settings all|a,b,...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from timing import loadavg, spread  # bench/timing.py (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MATHRECIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
TRL_DEFAULTS = {"bf16": True, "fp16": False, "gradient_checkpointing": True, "use_cpu": True,
                "optim": "adamw_torch_fused"}
# plus the optimizer the project's stage runs (its recipe's, else the trainer's default): see competent()
COMPETENT = {"bf16": False, "fp16": False, "gradient_checkpointing": False, "use_cpu": True}
SFT_SETTINGS = ("trl_defaults", "trl_competent", "mathrecipe", "mathrecipe_packed")
GRPO_SETTINGS = ("trl_defaults", "trl_competent", "mathrecipe")
WARMUP_STEPS = 2  # not timed: first-call allocations, lazy initialisation


# ------------------------------------------------------------------------------------------ the workload


def workload(model: str, tmp: Path, grpo_completion: int) -> tuple[Any, str, Path, Path]:
    """(recipe, model folder, SFT rows, GRPO rows). Real: the rehearsal's rows (the shared AIME sample in OpenR1's
    shape, traces <= 192 tokens) and its settings scaled to a bench; toy: the toy recipe's own data."""
    from mathrecipe.recipe import load_recipe

    if model == "toy":
        from mathrecipe.pipeline import prepare_data, prepare_model

        recipe = load_recipe(ROOT / "recipes" / "toy.yaml", [f"output_dir={tmp}"])
        model_path = prepare_model(recipe, tmp / "model-init")
        paths = prepare_data(recipe, tmp / "data", model_path)
        return recipe, model_path, paths["sft"], paths["grpo"]
    from transformers import AutoTokenizer

    from mathrecipe.prompts import SYSTEM_PROMPT, build_messages
    from mathrecipe.realmodel import AIME_SAMPLE, r1_shaped_trace, real_model_dir

    model_path = str(real_model_dir())
    tok = AutoTokenizer.from_pretrained(model_path)
    rows = [json.loads(x) for x in (SHARED / AIME_SAMPLE).read_text().splitlines() if x.strip()]
    sft, grpo = [], []
    for r in rows:
        trace = r1_shaped_trace(r["solution"], str(r["answer"]))
        if len(tok(trace, add_special_tokens=False)["input_ids"]) <= 192:
            sft.append({"messages": build_messages(r["problem"], SYSTEM_PROMPT)
                        + [{"role": "assistant", "content": trace}]})
        grpo.append({"prompt": r["problem"], "answer": str(r["answer"])})
    from mathrecipe.data.io import write_jsonl

    recipe = load_recipe(ROOT / "recipes" / "rehearsal.yaml", [
        f"output_dir={tmp}", f"model.name_or_path={model_path}", "sft.per_device_train_batch_size=4", "sft.packing=false",
        "sft.gradient_accumulation_steps=1", "sft.extra={}", "grpo.num_generations=4", "grpo.per_device_train_batch_size=8",
        "grpo.gradient_accumulation_steps=1", f"grpo.max_completion_length={grpo_completion}",
        f"rewards.cosine.max_len={2 * grpo_completion}", "grpo.extra={}"])
    return recipe, model_path, write_jsonl(sft, tmp / "sft.jsonl"), write_jsonl(grpo, tmp / "grpo.jsonl")


# --------------------------------------------------------------------------------------------- measures


def _step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._t = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


def sft_flags(setting: str, recipe: Any, out: Path) -> dict[str, Any]:
    """SFTConfig flags of a setting; the shared ones (batch, learning rate, steps) are set by the caller."""
    from trl import SFTConfig

    from mathrecipe.hardware import checkpointing_field
    from mathrecipe.sft import sft_args

    args = sft_args(recipe, out)
    optim = str(getattr(SFTConfig(**args).optim, "value", SFTConfig(**args).optim))  # what `mathrecipe sft` runs
    if setting == "trl_defaults":
        return dict(TRL_DEFAULTS)
    if setting == "trl_competent":
        return {**COMPETENT, "optim": optim}
    flags = {**{k: args[k] for k in ("bf16", "fp16", checkpointing_field(), "use_cpu")}, "optim": optim}
    if setting == "mathrecipe_packed":
        flags.update(packing=True, padding_free=True)  # TRL's bfd packing; no pad tokens are computed
    return flags


def run_sft(recipe: Any, model_path: str, data: Path, setting: str, steps: int, out: Path) -> dict[str, Any]:
    from trl import SFTConfig, SFTTrainer

    from mathrecipe.modeling import load_model_and_tokenizer
    from mathrecipe.sft import load_sft_dataset, tokenize_sft

    model, tok = load_model_and_tokenizer(model_path, recipe.model, training=True)
    ds = tokenize_sft(load_sft_dataset(data), tok)
    s = recipe.sft
    flags = sft_flags(setting, recipe, out)
    cfg = SFTConfig(output_dir=str(out), per_device_train_batch_size=s.per_device_train_batch_size, learning_rate=s.learning_rate,
                    max_steps=steps + WARMUP_STEPS, max_length=s.max_length, completion_only_loss=True,
                    report_to="none", save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=0, **flags)
    timer = _step_timer()
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[timer])
    seen: list[int] = []
    collate = trainer.data_collator

    def counting(batch: Any) -> Any:  # real tokens only: padding is work a packed batch does not do
        b = collate(batch)
        seen.append(int(b["attention_mask"].sum()) if "attention_mask" in b else
                    int((b["position_ids"] >= 0).sum()) if "position_ids" in b else int(b["input_ids"].numel()))
        return b

    trainer.data_collator = counting
    trainer.train()
    times, tokens = timer.times[WARMUP_STEPS:], seen[WARMUP_STEPS: WARMUP_STEPS + steps]
    return {"tokens_per_s": sum(tokens) / sum(times), "s_per_step": statistics.median(times),
            "first_step_s": timer.times[0],
            "tokens_per_step": statistics.fmean(tokens), "flags": flags}


def grpo_flags(setting: str, recipe: Any, out: Path) -> dict[str, Any]:
    from trl import GRPOConfig

    from mathrecipe.grpo import grpo_args
    from mathrecipe.hardware import checkpointing_field

    args = grpo_args(recipe, out)
    cfg = GRPOConfig(**args)
    optim = str(getattr(cfg.optim, "value", cfg.optim))  # what `mathrecipe grpo` runs (the recipe's, else TRL's)
    if setting == "trl_defaults":
        return dict(TRL_DEFAULTS)
    if setting == "trl_competent":
        return {**COMPETENT, "optim": optim}
    keys = ("bf16", "fp16", checkpointing_field(), "use_cpu", "cache_implementation")
    return {**{k: args[k] for k in keys if k in args}, "optim": optim}


def run_grpo(recipe: Any, model_path: str, data: Path, setting: str, steps: int, out: Path) -> dict[str, Any]:
    from trl import GRPOConfig, GRPOTrainer
    from trl.extras import profiling

    from mathrecipe.grpo import build_rewards, load_grpo_dataset
    from mathrecipe.modeling import load_model_and_tokenizer

    g = recipe.grpo
    rewards, weights = build_rewards(recipe)
    flags = grpo_flags(setting, recipe, out)
    cfg = GRPOConfig(output_dir=str(out), per_device_train_batch_size=g.per_device_train_batch_size,
                     num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                     learning_rate=g.learning_rate, beta=g.beta, temperature=g.temperature, top_p=g.top_p,
                     max_steps=steps + 1, reward_weights=weights, report_to="none", save_strategy="no",
                     logging_steps=10_000, disable_tqdm=True, seed=0, **flags)
    model, tok = load_model_and_tokenizer(model_path, recipe.model, training=True)
    timer = _step_timer()
    trainer = GRPOTrainer(model=model, args=cfg, reward_funcs=rewards,
                          train_dataset=load_grpo_dataset(data, recipe.data.system_prompt), processing_class=tok,
                          callbacks=[timer])
    spent: dict[str, float] = defaultdict(float)
    stack: list[str] = []
    enter, leave = profiling.ProfilingContext.__enter__, profiling.ProfilingContext.__exit__

    def _enter(self: Any) -> Any:
        stack.append(self.name)
        return enter(self)

    def _exit(self: Any, *exc: Any) -> Any:
        stack.pop()
        spent["/".join([*stack, self.name])] += time.perf_counter() - self._start_time
        return leave(self, *exc)

    profiling.ProfilingContext.__enter__, profiling.ProfilingContext.__exit__ = _enter, _exit
    first: dict[str, float] = {}
    try:
        trainer.add_callback(snapshot_after_first(spent, first))
        trainer.train()
    finally:
        profiling.ProfilingContext.__enter__, profiling.ProfilingContext.__exit__ = enter, leave
    measured = {k: v - first.get(k, 0.0) for k, v in spent.items()}
    n = len(timer.times) - 1
    total = sum(timer.times[1:])
    prep = sum(v for k, v in measured.items() if k.endswith("_prepare_inputs"))
    gen = sum(v for k, v in measured.items() if k.endswith(("transformers.generate", "generate_batch",
                                                              "vLLM.generate")))
    rew = sum(v for k, v in measured.items() if k.endswith("_calculate_rewards"))
    logps = sum(v for k, v in measured.items() if "_prepare_inputs" in k and
                k.endswith("_get_per_token_logps_and_entropies"))
    loss = sum(v for k, v in measured.items() if k.endswith("compute_loss"))
    profile = {"generation": gen / n, "old/reference log-probs": logps / n, "rewards": rew / n,
               "other input preparation": (prep - gen - logps - rew) / n, "loss forward": loss / n,
               "backward + optimizer": (total - prep - loss) / n}
    return {"s_per_step": statistics.median(timer.times[1:]), "first_step_s": timer.times[0], "profile_s": profile,
            "flags": flags,
            "completions_per_step": g.per_device_train_batch_size, "max_completion_length": g.max_completion_length}


def snapshot_after_first(spent: dict[str, float], snap: dict[str, float]) -> Any:
    """A callback copying the profile totals after step 1, so that profiles exclude the warm-up step."""
    from transformers import TrainerCallback

    class Snapshot(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 1:
                snap.update(spent)

    return Snapshot()


# ------------------------------------------------------------------------------------------ orchestration


def child(stage: str, setting: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this (fresh) process; its peak RSS is the setting's own."""
    import torch

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        recipe, model_path, sft_rows, grpo_rows = workload(args.model, tmp, args.grpo_completion)
        before = loadavg()
        if stage == "sft":
            steps = args.defaults_steps if setting == "trl_defaults" else args.sft_steps
            res = run_sft(recipe, model_path, sft_rows, setting, steps, tmp / "out")
        else:
            steps = args.defaults_steps if setting == "trl_defaults" else args.grpo_steps
            res = run_grpo(recipe, model_path, grpo_rows, setting, steps, tmp / "out")
        res["timed_steps"] = steps
    res.update(peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, load_before=before,
               load_after=loadavg(), threads=torch.get_num_threads())
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("real", "toy"), default="real")
    ap.add_argument("--sft-steps", type=int, default=8, help="timed SFT steps per measurement (after 2 warm-up)")
    ap.add_argument("--grpo-steps", type=int, default=3, help="timed GRPO steps per measurement (after 1 warm-up)")
    ap.add_argument("--grpo-completion", type=int, default=64, help="GRPO max_completion_length (real model)")
    ap.add_argument("--defaults-steps", type=int, default=2,
                    help="timed steps for trl_defaults, in both stages (bf16 autocast on a CPU without native bf16 "
                    "and recomputation make each step many times slower; its ratio needs no more)")
    ap.add_argument("--settings", default="all", help="comma list of settings to run (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", default="sft,grpo")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--child", nargs=2, metavar=("STAGE", "SETTING"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(*args.child, args)), flush=True)
        return
    import torch

    if torch.cuda.is_available():
        raise SystemExit("bench_train.py measures the CPU settings; on a GPU use bench/gpu_check.sh")
    stages = [s for s in args.stages.split(",") if s]
    passthrough = ["--model", args.model, "--sft-steps", str(args.sft_steps), "--grpo-steps", str(args.grpo_steps),
                   "--grpo-completion", str(args.grpo_completion), "--defaults-steps", str(args.defaults_steps)]
    chosen = None if args.settings == "all" else set(args.settings.split(","))
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    load_start = loadavg()
    for r in range(args.repeats):
        for stage in stages:
            settings = tuple(x for x in (SFT_SETTINGS if stage == "sft" else GRPO_SETTINGS)
                             if chosen is None or x in chosen)
            order = settings if r % 2 == 0 else tuple(reversed(settings))  # alternate: drift hits all alike
            for setting in order:
                proc = subprocess.run([sys.executable, __file__, *passthrough, "--child", stage, setting],
                                      capture_output=True, text=True)
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                if proc.returncode != 0 or line is None:
                    raise SystemExit(f"{stage}/{setting} failed:\n{proc.stderr[-3000:]}")
                runs[f"{stage}/{setting}"].append(json.loads(line[len("RESULT "):]))
                print(stage, setting, {k: v for k, v in runs[f"{stage}/{setting}"][-1].items()
                                       if k not in ("profile_s", "flags")}, flush=True)
    result = summarise(runs, args, load_start)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "train.md").write_text(render(result))
    print(render(result))


def summarise(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace,
              load_start: list[float]) -> dict[str, Any]:
    import torch

    table: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        key = "tokens_per_s" if name.startswith("sft/") else "s_per_step"
        table[name] = {key: spread([x[key] for x in rs]), "peak_rss_gib": spread([x["peak_rss_gib"] for x in rs]),
                       "flags": rs[0]["flags"], "timed_steps": rs[0]["timed_steps"],
                       "first_step_s": spread([x["first_step_s"] for x in rs])}
    ratios = {}
    for stage, key in (("sft", "tokens_per_s"), ("grpo", "s_per_step")):
        ours = table.get(f"{stage}/mathrecipe")
        for base in ("trl_defaults", "trl_competent"):
            b = table.get(f"{stage}/{base}")
            if ours and b:
                ratios[f"{stage}: mathrecipe / {base}"] = ours[key]["median"] / b[key]["median"]
        packed = table.get("sft/mathrecipe_packed")
        if stage == "sft" and packed and table.get("sft/trl_competent"):
            ratios["sft: mathrecipe_packed / trl_competent"] = (packed[key]["median"]
                                                               / table["sft/trl_competent"][key]["median"])
    return {
        "command": " ".join(["python bench/bench_train.py", *sys.argv[1:]]),
        "model": args.model, "repeats": args.repeats, "sft_steps": args.sft_steps, "grpo_steps": args.grpo_steps,
        "grpo_completion": args.grpo_completion,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "load_start": load_start, "load_end": loadavg(),
        "table": table, "ratios": ratios, "runs": runs,
    }


def _fmt(s: dict[str, float], digits: int = 0) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def render(r: dict[str, Any]) -> str:
    t = r["table"]
    model = ("SmolLM2-135M-Instruct (real, bf16 checkpoint trained as fp32)" if r["model"] == "real"
             else "the 1.1M toy")
    lines = [f"# Training speed and peak memory on CPU: {model}", "",
             f"Command: `{r['command']}`. Machine: {r['machine']}. Load average (1/5/15 min) {r['load_start']} at "
             f"start, {r['load_end']} at the end; each run's own is in `train.json`.", "",
             f"Medians over {r['repeats']} repeats, (min-max) beside them; each run is a fresh process (its peak "
             "RSS is its own: model, optimizer, activations, KV cache); settings alternate within a repeat.", "",
             "## SFT: real (non-pad) tokens per second", "",
             "| setting | flags | timed steps | tokens/s | peak RSS GiB |", "|---|---|---:|---:|---:|"]
    for s in SFT_SETTINGS:
        x = t.get(f"sft/{s}")
        if x:
            lines.append(f"| {s} | `{x['flags']}` | {x['timed_steps']} | {_fmt(x['tokens_per_s'])} | "
                         f"{_fmt(x['peak_rss_gib'], 2)} |")
    g0 = next((rs[0] for k, rs in r["runs"].items() if k.startswith("grpo/")), {})
    lines += ["", f"## GRPO: seconds per step ({g0.get('completions_per_step', '?')} completions of up to "
              f"{g0.get('max_completion_length', '?')} tokens a step, rollouts included)", "",
              "| setting | flags | timed steps | s/step | first (untimed) step s | peak RSS GiB |",
              "|---|---|---:|---:|---:|---:|"]
    for s in GRPO_SETTINGS:
        x = t.get(f"grpo/{s}")
        if x:
            lines.append(f"| {s} | `{x['flags']}` | {x['timed_steps']} | {_fmt(x['s_per_step'], 2)} | "
                         f"{_fmt(x['first_step_s'], 1)} | {_fmt(x['peak_rss_gib'], 2)} |")
    lines += ["", "## Ratios of medians (SFT tokens/s: above 1x is faster; GRPO s/step: below 1x is faster)", "",
              "| comparison | ratio |", "|---|---:|"]
    for k, v in r["ratios"].items():
        lines.append(f"| {k} | {v:.2f}x |")
    grpo_runs = {s: r["runs"].get(f"grpo/{s}") for s in GRPO_SETTINGS}
    if all(grpo_runs.values()):
        lines += ["", "## Where a GRPO step's time goes (seconds per step, last repeat)", "",
                  "| part | " + " | ".join(GRPO_SETTINGS) + " |", "|---|" + "---:|" * len(GRPO_SETTINGS)]
        profiles = [grpo_runs[s][-1]["profile_s"] for s in GRPO_SETTINGS]
        for part in profiles[0]:
            lines.append(f"| {part} | " + " | ".join(f"{p[part]:.2f}" for p in profiles) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
