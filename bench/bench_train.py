"""Training speed on CPU: the project's settings against TRL's defaults, on the toy model, in one run.

SFT: tokens/s (trained-on and prompt tokens, padding excluded) with the toy recipe's batch, for
  (a) TRL 1.16's defaults on CPU (bf16 autocast, gradient checkpointing, fused AdamW), and
  (b) what the project picks on CPU (``mathrecipe.hardware.precision_kwargs("auto")``: fp32, no checkpointing).
GRPO: seconds per step with the same rewards, prompts and batch, TRL's defaults against the project's, with a profile
of where a step's time goes (generation, log-probs of the old/reference policy, rewards, loss forward, backward and
optimizer).

Settings are measured in alternation (A, B, A, B ...) so that load from other processes hits both alike; the median
of the repeats is reported. Goals (issue 11): SFT >= 2.5x TRL's defaults, GRPO step <= 0.6x.

    python bench/bench_train.py [--sft-steps 40] [--grpo-steps 4] [--repeats 2] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from mathrecipe.hardware import precision_kwargs
from mathrecipe.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
TRL_DEFAULTS = {"bf16": True, "fp16": False, "gradient_checkpointing": True, "use_cpu": True,
                "optim": "adamw_torch_fused"}


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (generation included for GRPO) and the tokens it processed."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._t = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.times.append(time.perf_counter() - self._t)


def _toy(tmp: Path) -> tuple[Any, str, dict[str, Path]]:
    from mathrecipe.pipeline import prepare_data, prepare_model

    recipe = load_recipe(ROOT / "recipes" / "toy.yaml", [f"output_dir={tmp}"])
    model_path = prepare_model(recipe, tmp / "model-init")
    return recipe, model_path, prepare_data(recipe, tmp / "data", model_path)


def sft_tokens_per_s(recipe: Any, model_path: str, data: Path, settings: dict[str, Any], steps: int,
                     out: Path) -> dict[str, float]:
    from trl import SFTConfig, SFTTrainer

    from mathrecipe.modeling import load_model_and_tokenizer
    from mathrecipe.sft import load_sft_dataset, tokenize_sft

    model, tok = load_model_and_tokenizer(model_path, recipe.model, training=True)
    ds = tokenize_sft(load_sft_dataset(data), tok)
    s = recipe.sft
    cfg = SFTConfig(output_dir=str(out), per_device_train_batch_size=s.batch_size, learning_rate=s.learning_rate,
                    max_steps=steps + 5, max_length=s.max_length, completion_only_loss=True, report_to="none",
                    save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=0, **settings)
    timer = StepTimer()
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[timer])
    seen = []
    collate = trainer.data_collator

    def counting(batch: Any) -> Any:
        out_batch = collate(batch)
        seen.append(int(out_batch["attention_mask"].sum()) if "attention_mask" in out_batch
                    else int(out_batch["input_ids"].numel()))
        return out_batch

    trainer.data_collator = counting
    trainer.train()
    times, tokens = timer.times[5:], seen[5: 5 + steps]
    return {"tokens_per_s": sum(tokens) / sum(times), "s_per_step": statistics.median(times)}


def grpo_step(recipe: Any, model_path: str, data: Path, settings: dict[str, Any], steps: int,
              out: Path) -> dict[str, Any]:
    from trl import GRPOConfig, GRPOTrainer
    from trl.extras import profiling

    from mathrecipe.grpo import build_rewards, load_grpo_dataset
    from mathrecipe.modeling import load_model_and_tokenizer

    g = recipe.grpo
    rewards, weights = build_rewards(recipe)
    cfg = GRPOConfig(output_dir=str(out), per_device_train_batch_size=g.batch_size,
                     num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                     learning_rate=g.learning_rate, beta=g.beta, temperature=g.temperature, max_steps=steps + 1,
                     reward_weights=weights, report_to="none", save_strategy="no", logging_steps=10_000,
                     disable_tqdm=True, seed=0, **settings)
    model, tok = load_model_and_tokenizer(model_path, recipe.model, training=True)
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, args=cfg, reward_funcs=rewards, train_dataset=load_grpo_dataset(data, None),
                          processing_class=tok, callbacks=[timer])
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
    try:
        first = {}
        trainer.add_callback(_SnapshotAfterFirst(spent, first))
        trainer.train()
    finally:
        profiling.ProfilingContext.__enter__, profiling.ProfilingContext.__exit__ = enter, leave
    measured = {k: v - first.get(k, 0.0) for k, v in spent.items()}
    total = sum(timer.times[1:])
    prep = sum(v for k, v in measured.items() if k.endswith("_prepare_inputs"))
    gen = sum(v for k, v in measured.items() if k.endswith(("transformers.generate", "generate_batch",
                                                              "vLLM.generate")))
    rew = sum(v for k, v in measured.items() if k.endswith("_calculate_rewards"))
    logps = sum(v for k, v in measured.items() if "_prepare_inputs" in k and
                k.endswith("_get_per_token_logps_and_entropies"))
    loss = sum(v for k, v in measured.items() if k.endswith("compute_loss"))
    n = len(timer.times) - 1
    profile = {"generation": gen / n, "old/reference log-probs": logps / n, "rewards": rew / n,
               "other input preparation": (prep - gen - logps - rew) / n, "loss forward": loss / n,
               "backward + optimizer": (total - prep - loss) / n}
    return {"s_per_step": statistics.median(timer.times[1:]), "profile_s": profile}


class _SnapshotAfterFirst(TrainerCallback):
    """Profiles exclude the first (warm-up) step."""

    def __init__(self, spent: dict[str, float], snap: dict[str, float]) -> None:
        self.spent, self.snap = spent, snap

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == 1:
            self.snap.update(self.spent)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sft-steps", type=int, default=40)
    ap.add_argument("--grpo-steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    if torch.cuda.is_available():
        raise SystemExit("bench_train.py measures the CPU settings; on a GPU use bench/gpu_check.sh")
    from mathrecipe.grpo import grpo_args

    ours = {k: v for k, v in precision_kwargs("auto").items()}
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        recipe, model_path, paths = _toy(tmp)
        # the project's GRPO choices on this machine, as mathrecipe.grpo.grpo_args makes them (CPU: static KV cache)
        project = grpo_args(recipe, tmp / "args")
        ours_grpo = {**ours, **{k: project[k] for k in ("cache_implementation",) if k in project}}
        for r in range(args.repeats):
            for name, settings in (("sft/trl_defaults", TRL_DEFAULTS), ("sft/mathrecipe", ours)):
                runs[name].append(sft_tokens_per_s(recipe, model_path, paths["sft"], settings, args.sft_steps,
                                                   tmp / f"{name}-{r}"))
                print(name, runs[name][-1], flush=True)
            for name, settings in (("grpo/trl_defaults", TRL_DEFAULTS), ("grpo/mathrecipe", ours_grpo)):
                runs[name].append(grpo_step(recipe, model_path, paths["grpo"], settings, args.grpo_steps,
                                            tmp / f"{name}-{r}"))
                print(name, runs[name][-1], flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[name])

    sft_ratio = med("sft/mathrecipe", "tokens_per_s") / med("sft/trl_defaults", "tokens_per_s")
    grpo_ratio = med("grpo/mathrecipe", "s_per_step") / med("grpo/trl_defaults", "s_per_step")
    result = {
        "command": " ".join(["python bench/bench_train.py", *sys.argv[1:]]),
        "repeats": args.repeats,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "settings": {"trl_defaults": TRL_DEFAULTS, "mathrecipe": ours, "mathrecipe_grpo": ours_grpo},
        "runs": runs,
        "sft_tokens_per_s": {"trl_defaults": med("sft/trl_defaults", "tokens_per_s"),
                             "mathrecipe": med("sft/mathrecipe", "tokens_per_s"), "ratio": sft_ratio, "goal": 2.5},
        "grpo_s_per_step": {"trl_defaults": med("grpo/trl_defaults", "s_per_step"),
                            "mathrecipe": med("grpo/mathrecipe", "s_per_step"), "ratio": grpo_ratio, "goal": 0.6},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "train.md").write_text(render(result))
    print(render(result))


def render(r: dict[str, Any]) -> str:
    s, g = r["sft_tokens_per_s"], r["grpo_s_per_step"]
    lines = ["# Training speed on CPU: the project's settings vs TRL's defaults (toy model)", "",
             f"Machine: {r['machine']}. Command: `{r.get('command', 'python bench/bench_train.py')}`. "
             + ("Medians over alternating repeats." if r.get("repeats", 2) > 1 else "One repeat of each setting."),
             "", f"TRL 1.16 defaults on CPU: `{r['settings']['trl_defaults']}`; the project's CPU choice: "
             f"`{r['settings']['mathrecipe']}`, for GRPO `{r['settings'].get('mathrecipe_grpo', r['settings']['mathrecipe'])}`.",
             "",
             "| measure | TRL defaults | mathrecipe | ratio | goal | met |", "|---|---:|---:|---:|---:|---|",
             f"| SFT tokens/s | {s['trl_defaults']:.0f} | {s['mathrecipe']:.0f} | {s['ratio']:.2f}x | >= "
             f"{s['goal']}x | {'yes' if s['ratio'] >= s['goal'] else 'NO'} |",
             f"| GRPO s/step (64 completions) | {g['trl_defaults']:.2f} | {g['mathrecipe']:.2f} | {g['ratio']:.2f}x | "
             f"<= {g['goal']}x | {'yes' if g['ratio'] <= g['goal'] else 'NO'} |", "",
             "## Where a GRPO step's time goes (seconds per step)", "",
             "| part | TRL defaults | mathrecipe |", "|---|---:|---:|"]
    a = r["runs"]["grpo/trl_defaults"][-1]["profile_s"]
    b = r["runs"]["grpo/mathrecipe"][-1]["profile_s"]
    for part in a:
        lines.append(f"| {part} | {a[part]:.2f} | {b[part]:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
