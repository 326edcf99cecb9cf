"""The one config schema: a recipe YAML plus ``key=value`` overrides, validated before anything runs.

The defaults ARE the toy recipe (``recipes/toy.yaml`` spells them out), so ``mathrecipe run`` with no recipe runs it.
Every error names the key and says how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mathrecipe.errors import MathRecipeError
from mathrecipe.methods import METHODS, resolve_method
from mathrecipe.rewards import REWARDS
from mathrecipe.schema import (  # noqa: F401  (re-exported: the recipe's sections are imported from here)
    MOVED,
    RENAMED,
    RENAMED_KEYS,
    BuildConfig,
    DataConfig,
    EvalConfig,
    HealthConfig,
    ModelConfig,
    SampleConfig,
    SFTConfig,
    SourceConfig,
    ToyDataConfig,
    ToyModelConfig,
)


class RecipeError(MathRecipeError):
    """A recipe that cannot run; the message names the key and the fix."""


@dataclass
class GRPOConfig:
    """Stage 2: GRPO with TRL's GRPOTrainer, from the SFT model (or ``model.name_or_path`` when SFT is off).
    Paper values are the 14B recipe's (recipes/paper/fast-math-r1-14b.yaml)."""

    enabled: bool = field(default=True, metadata={"help": "run stage 2"})
    method: str = field(default="paper", metadata={"help": (
        "the length-control method: its rewards and the TRL options it sets (mathrecipe.methods.METHODS: paper, "
        "no-format, no-cosine, no-length, dler, thinkprune, custom); the run's recipe.yaml shows what it set")})
    num_generations: int = field(default=8, metadata={"help": "completions sampled per prompt (the group). Paper: 8"})
    per_device_train_batch_size: int = field(default=64, metadata={"help": (
        "completions per device per micro-step (TRL's field of this name); num_generations divides it x "
        "gradient_accumulation_steps. Paper: 2 (x 8 accumulation)")})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step. Paper: 8"})
    max_steps: int = field(default=80, metadata={"help": "optimizer steps of stage 2. Paper: 50"})
    learning_rate: float = field(default=2.5e-5, metadata={"help": (
        "peak learning rate (toy: 2.5e-5 x 80 steps, chosen on the dev split; recipes/toy.yaml says why). "
        "Paper: 4e-6")})
    lr_scheduler: str = field(default="constant", metadata={"help": (
        "transformers' scheduler name (constant, cosine, constant_with_warmup, ...). Paper: cosine")})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps. Paper: 0"})
    beta: float = field(default=0.04, metadata={"help": (
        "KL coefficient against the start model (0: no reference model). Paper: 0.04 (TRL 1.16's default: 0)")})
    epsilon: float = field(default=0.2, metadata={"help": "PPO clip range: ratios clipped to [1 - eps, 1 + eps]. "
                                                          "Paper: 0.2"})
    epsilon_high: float | None = field(default=None, metadata={"help": (
        "clip-higher (DAPO, DLER): the upper clip is 1 + epsilon_high; null: = epsilon")})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature. Paper: 1.0"})
    top_p: float = field(default=1.0, metadata={"help": "rollout nucleus sampling. Paper: 0.9"})
    min_p: float | None = field(default=None, metadata={"help": "rollout min-p sampling; null: off. Paper: 0.05"})
    max_completion_length: int = field(default=160, metadata={"help": (
        "tokens a rollout may generate; longer ones are cut (the health alarm max_truncation watches). "
        "Paper: 16384")})
    max_kl: float | None = field(default=0.5, metadata={"help": (
        "collapse guard: stop when the logged KL passes this and keep the last checkpoint measured before it "
        "(null: off; needs beta > 0). Paper recipes: 0.5")})
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = field(default="dapo", metadata={"help": (
        "how the token losses are averaged: grpo per sequence, bnpo per micro-batch, dapo over the batch's tokens "
        "(TRL 1.16's default), dr_grpo by a constant. Paper: bnpo (its TRL's token mean per micro-batch)")})
    scale_rewards: Literal["group", "batch", "none"] = field(default="group", metadata={"help": (
        "advantages divided by the reward std of the group, the batch, or not at all. Paper: group")})
    mask_truncated_completions: bool = field(default=False, metadata={"help": (
        "leave completions cut at max_completion_length out of the loss. Paper: false")})
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(default="auto", metadata={"help": (
        "auto: bf16 on a GPU that has it, fp32 on CPU (master weights stay fp32 either way). Paper: bf16")})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": (
        "recompute activations in the backward pass; null: off on CPU, on a GPU only when `mathrecipe plan` says "
        "the stage needs it. Paper: true")})
    backend: Literal["hf", "paged", "vllm"] = field(default="hf", metadata={"help": (
        "rollouts: hf = transformers generate; paged = TRL's continuous batching (refused with bf16/fp16: TRL "
        "casts the master weights); vllm = vLLM (GPU). Paper: vllm")})
    vllm_mode: Literal["colocate", "server"] = field(default="colocate", metadata={"help": (
        "vLLM in the training processes (colocate) or a separate `trl vllm-serve` (server). Paper: colocate")})
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={"help": (
        "share of GPU memory vLLM may take when colocated. Paper: 0.3")})
    vllm_importance_sampling_correction: bool = field(default=True, metadata={"help": (
        "TRL's truncated importance-sampling correction for vLLM's sampler mismatch (TRL 1.16's default). Paper: "
        "false (its trainer had none)")})
    logging_steps: int = field(default=10, metadata={"help": "log every this many steps (the health alarms read "
                                                               "the logged steps). Paper: 1"})
    save_steps: int | None = field(default=None, metadata={"help": (
        "a checkpoint every this many steps (resume points; the collapse guard restores one); null: only the "
        "final model. Paper: 5")})
    deepspeed: str | None = field(default=None, metadata={"help": (
        "a DeepSpeed JSON, e.g. recipes/accelerate/deepspeed_zero2.json. Paper: ZeRO-2")})
    fsdp: str | None = field(default=None, metadata={"help": "an FSDP config JSON (full_shard, auto_wrap)"})
    extra: dict[str, Any] = field(default_factory=dict, metadata={"help": (
        "passed to trl.GRPOConfig as is (fields the schema does not model; fields it does are refused here)")})


@dataclass
class Recipe:
    """A whole run: data -> SFT -> GRPO -> evaluation -> report. Sections: model, data, sft, grpo, rewards, eval,
    health (``mathrecipe inspect --keys`` lists every key)."""

    output_dir: str = field(default="runs/toy", metadata={"help": (
        "the run's folder: data, checkpoints, evaluations, report (a rerun resumes it)")})
    seed: int = field(default=0, metadata={"help": (
        "seed of the toy task, the data build's sampling, training and sampling. Paper recipes: 42 (the trainer's "
        "default; the scripts' set_seed(2025) was overridden)")})
    report_to: str | list[str] = field(default="none", metadata={"help": (
        "where both stages log: none, tensorboard, wandb, ... (or a list)")})
    accelerate_config: str | None = field(default=None, metadata={"help": (
        "the `accelerate launch --config_file` this recipe is meant for (its process count is checked against "
        "the batch sizes). Paper recipes: recipes/accelerate/multi_gpu.yaml (8 processes)")})
    verdicts: bool | None = field(default=None, metadata={"help": (
        "judge the paper's two effects in report.md (thresholds set for the toy task): true, false, or null = "
        "only with data.source=toy")})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the starting model"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "the data, and how it is built"})
    sft: SFTConfig = field(default_factory=SFTConfig, metadata={"help": "stage 1: SFT"})
    grpo: GRPOConfig = field(default_factory=GRPOConfig, metadata={"help": "stage 2: GRPO"})
    rewards: dict[str, Any] = field(default_factory=lambda: reward_options(METHODS["paper"].rewards), metadata={
        "help": ("GRPO's rewards: reward name -> its options (mathrecipe.rewards.REWARDS: weight, ...), in the order "
                 "TRL calls them; grpo.method's by default")})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": (
        "the in-run evaluation; also eval's and solve's sampling defaults")})
    health: HealthConfig = field(default_factory=HealthConfig, metadata={"help": "GRPO's health alarms"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except RecipeError:
                pass
        raise RecipeError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise RecipeError(f"{key}: must be one of {', '.join(map(repr, choices))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise RecipeError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise RecipeError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise RecipeError(f"{key}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    return value


def did_you_mean(name: str, names: Any, prefix: str = "") -> str:
    """'did you mean '<prefix><closest>'? ' for a mistyped name, or ''."""
    close = difflib.get_close_matches(name, list(names), n=1)
    return f"did you mean '{prefix}{close[0]}'? " if close else ""


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{prefix or 'recipe'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names and key in RENAMED:
            raise RecipeError(RENAMED[key])
        if k not in names:
            hint = did_you_mean(str(k), names, f"{prefix}." if prefix else "")
            raise RecipeError(f"unknown recipe key '{key}'. {hint}Valid keys here: {', '.join(names)}")
        kwargs[k] = _coerce(v, hints[k], key)
    return cls(**kwargs)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"override '{dotted}': '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``sft.epochs=3`` -> ("sft.epochs", 3). Values are read as YAML (numbers, true/false, null, lists)."""
    if "=" not in text:
        raise RecipeError(f"override {text!r} is not key=value (e.g. sft.epochs=3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise RecipeError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe YAML (None: the toy defaults), apply ``key=value`` overrides, and validate it."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"recipe file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise RecipeError(f"{p}: not valid YAML: {e}") from e
        if loaded is None:  # an empty file would otherwise run the built-in toy recipe without a word
            raise RecipeError(f"{p}: the recipe file is empty; write its settings (recipes/toy.yaml shows every key), "
                              "or give no recipe to run the built-in toy recipe")
        if not isinstance(loaded, dict):
            raise RecipeError(f"{p}: a recipe is a mapping of sections (output_dir, model, data, sft, ...)")
        tree = loaded
    for o in overrides or []:
        k, v = parse_override(o)
        _set_path(tree, k, v)
    recipe = _build(Recipe, resolve_method(tree))
    recipe.rewards = reward_options(recipe.rewards)
    validate(recipe)
    return recipe


def reward_options(rewards: dict[str, Any]) -> dict[str, Any]:
    """{reward name: raw options} -> {name: its options dataclass (mathrecipe.rewards.REWARDS)}, each key checked
    as any recipe key is (``rewards.<name>.<option>``)."""
    return {name: _build(REWARDS[name].options, opts, f"rewards.{name}") for name, opts in rewards.items()}


# The one map from recipe keys to TRL config fields: the stage argument builders (sft.sft_args, grpo.grpo_args) copy
# these values, the ownership tables below refuse them in *.extra, and the tests check they reach TRL.
SFT_TO_TRL = {
    "sft.epochs": "num_train_epochs", "sft.per_device_train_batch_size": "per_device_train_batch_size",
    "sft.gradient_accumulation_steps": "gradient_accumulation_steps", "sft.learning_rate": "learning_rate",
    "sft.lr_scheduler": "lr_scheduler_type", "sft.warmup_steps": "warmup_steps", "sft.weight_decay": "weight_decay",
    "sft.max_length": "max_length", "sft.packing": "packing", "sft.optim": "optim",
    "sft.save_only_model": "save_only_model", "sft.logging_steps": "logging_steps", "report_to": "report_to",
    "seed": "seed", "sft.deepspeed": "deepspeed",
}
GRPO_TO_TRL = {
    "grpo.per_device_train_batch_size": "per_device_train_batch_size",
    "grpo.gradient_accumulation_steps": "gradient_accumulation_steps",
    "grpo.num_generations": "num_generations", "grpo.max_completion_length": "max_completion_length",
    "grpo.max_steps": "max_steps", "grpo.learning_rate": "learning_rate", "grpo.lr_scheduler": "lr_scheduler_type",
    "grpo.warmup_steps": "warmup_steps", "grpo.beta": "beta", "grpo.epsilon": "epsilon",
    "grpo.epsilon_high": "epsilon_high", "grpo.temperature": "temperature", "grpo.top_p": "top_p",
    "grpo.min_p": "min_p", "grpo.loss_type": "loss_type", "grpo.scale_rewards": "scale_rewards",
    "grpo.mask_truncated_completions": "mask_truncated_completions", "grpo.logging_steps": "logging_steps",
    "report_to": "report_to", "seed": "seed", "grpo.deepspeed": "deepspeed",
}
GRPO_VLLM_TO_TRL = {  # copied only with grpo.backend=vllm
    "grpo.vllm_mode": "vllm_mode", "grpo.vllm_gpu_memory_utilization": "vllm_gpu_memory_utilization",
    "grpo.vllm_importance_sampling_correction": "vllm_importance_sampling_correction",
}
# TRL fields a stage sets by a rule from a recipe key (not a plain copy): field -> the key to change instead
SFT_BY_RULE = {
    "output_dir": "output_dir", "save_strategy": "sft.save_steps", "save_steps": "sft.save_steps",
    "fsdp": "sft.fsdp", "fsdp_config": "sft.fsdp", "bf16": "sft.precision", "fp16": "sft.precision",
    "use_cpu": "sft.precision", "gradient_checkpointing": "sft.gradient_checkpointing",
    "activation_checkpointing": "sft.gradient_checkpointing",  # transformers >= 5.23's name for it
    "completion_only_loss": "(always on: the trace is trained)", "use_liger_kernel": "sft.use_liger_kernel",
}
GRPO_BY_RULE = {
    "output_dir": "output_dir", "reward_weights": "rewards.<name>.weight", "use_vllm": "grpo.backend",
    "use_transformers_paged": "grpo.backend", "use_transformers_continuous_batching": "grpo.backend",
    "save_strategy": "grpo.save_steps", "save_steps": "grpo.save_steps", "fsdp": "grpo.fsdp",
    "fsdp_config": "grpo.fsdp", "bf16": "grpo.precision", "fp16": "grpo.precision", "use_cpu": "grpo.precision",
    "gradient_checkpointing": "grpo.gradient_checkpointing", "activation_checkpointing": "grpo.gradient_checkpointing",
}
# TRL arguments each stage sets from the recipe, and the recipe key to use instead of passing them through *.extra
# (passing one there used to raise a bare TypeError inside TRL).
SFT_OWNED = {**{f: k for k, f in SFT_TO_TRL.items()}, **SFT_BY_RULE}
GRPO_OWNED = {**{f: k for k, f in {**GRPO_TO_TRL, **GRPO_VLLM_TO_TRL}.items()}, **GRPO_BY_RULE}


def lookup(recipe: Recipe, key: str) -> Any:
    """The value of a dotted recipe key (``grpo.beta``, ``rewards.cosine.max_len``)."""
    node: Any = recipe
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def trl_fields(recipe: Recipe, table: dict[str, str]) -> dict[str, Any]:
    """{TRL field: recipe value} for a ``recipe key -> TRL field`` table."""
    return {f: lookup(recipe, k) for k, f in table.items()}


def check_extra(extra: dict[str, Any], owned: dict[str, str], section: str) -> None:
    """Refuse ``<section>.extra`` keys the recipe already sets (they used to raise a bare TypeError in TRL)."""
    clash = [k for k in extra if k in owned]
    if clash:
        raise RecipeError("; ".join(f"{section}.extra.{k} clashes with a recipe setting: use {owned[k]} instead"
                                    for k in clash))


def validate(r: Recipe) -> None:
    """Cross-key checks that a type check cannot see. Raises RecipeError naming the keys and the fix."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise RecipeError(msg)

    need(r.sft.epochs >= 1, f"sft.epochs must be >= 1, got {r.sft.epochs}")
    need(r.sft.per_device_train_batch_size >= 1,
         f"sft.per_device_train_batch_size must be >= 1, got {r.sft.per_device_train_batch_size}")
    need(r.sft.learning_rate > 0, f"sft.learning_rate must be > 0, got {r.sft.learning_rate}")
    g = r.grpo
    need(g.num_generations >= 2, f"grpo.num_generations must be >= 2 (GRPO compares completions), got {g.num_generations}")
    gen_batch = g.per_device_train_batch_size * g.gradient_accumulation_steps
    need(
        gen_batch % g.num_generations == 0,
        f"grpo.num_generations={g.num_generations} does not divide the per-device generation batch "
        f"grpo.per_device_train_batch_size x grpo.gradient_accumulation_steps = {gen_batch}; "
        f"set grpo.per_device_train_batch_size to a multiple of {g.num_generations}",
    )
    need(g.max_steps >= 1, f"grpo.max_steps must be >= 1, got {g.max_steps}")
    need(g.learning_rate > 0, f"grpo.learning_rate must be > 0, got {g.learning_rate}")
    need(g.temperature > 0, f"grpo.temperature must be > 0, got {g.temperature}")
    need(0 < g.top_p <= 1, f"grpo.top_p must be in (0, 1], got {g.top_p}")
    need(g.max_completion_length >= 1, f"grpo.max_completion_length must be >= 1, got {g.max_completion_length}")
    need(g.max_kl is None or g.beta > 0,
         f"grpo.max_kl={g.max_kl} with grpo.beta=0: without a KL term TRL logs no KL, so the collapse guard could "
         "never fire; set grpo.beta > 0, or grpo.max_kl=null to run without the guard")
    need(g.save_steps is None or g.save_steps >= 1, f"grpo.save_steps must be >= 1 or null, got {g.save_steps}")
    need(r.sft.save_steps is None or r.sft.save_steps >= 1,
         f"sft.save_steps must be >= 1 or null, got {r.sft.save_steps}")
    need(not (r.sft.select == "best" and not r.sft.eval_each_epoch),
         "sft.select=best picks the epoch with the best dev accuracy, but sft.eval_each_epoch=false evaluates no "
         "epoch: set sft.eval_each_epoch=true, or sft.select=last")
    need(not (r.sft.select == "best" and r.data.source == "toy" and r.data.toy.n_dev < 1),
         "sft.select=best needs dev problems apart from the reported ones: set data.toy.n_dev >= 1")
    need(0 < g.vllm_gpu_memory_utilization < 1,
         f"grpo.vllm_gpu_memory_utilization must be in (0, 1), got {g.vllm_gpu_memory_utilization}")
    # transformers writes DeepSpeed's state (global_step*/: fp32 master weights, optimizer, scheduler) only without
    # save_only_model, and its resume under DeepSpeed loads nothing else: deepspeed_load_checkpoint raises "Can't
    # find a valid checkpoint", so every interrupted run would fail on rerun.
    need(not (r.sft.deepspeed and r.sft.save_only_model),
         f"sft.save_only_model=true with sft.deepspeed={r.sft.deepspeed}: DeepSpeed resumes only from its own "
         "full state (global_step*/), which save_only_model never saves, so an interrupted run could not resume; "
         "set sft.save_only_model=false")
    # bfd_split equals bfd when every row fits sft.max_length; when one does not, it packs the row's tail as a
    # document of its own: trained without the problem in view
    need(not (r.sft.packing and r.sft.extra.get("packing_strategy") == "bfd_split"),
         "sft.extra.packing_strategy=bfd_split trains the tail of a row longer than sft.max_length as a separate "
         "document without its prompt; use bfd (TRL's default: over-long rows are refused before training) or "
         "wrapped (the paper's)")
    check_extra(r.sft.extra, SFT_OWNED, "sft")
    check_extra(r.grpo.extra, GRPO_OWNED, "grpo")
    h = r.health
    need(h.window >= 2, f"health.window must be >= 2 steps, got {h.window}")
    need(0 <= h.max_truncation <= 1 and 0 <= h.max_zero_std_groups <= 1,
         "health.max_truncation and health.max_zero_std_groups are shares in [0, 1]")
    for name, opts in r.rewards.items():
        check = getattr(opts, "problems", None)
        for problem in check(f"rewards.{name}", g.max_completion_length) if check else []:
            raise RecipeError(problem)
        # a null limit is measured on the dev problems before GRPO: refuse now, not after SFT
        need(not (g.enabled and getattr(opts, "limit", 0) is None and hasattr(opts, "percentile")
                  and not (r.data.dev_path if r.data.source == "files" else r.data.toy.n_dev >= 1)),
             f"rewards.{name}.limit is null: it is set from the start model's lengths on the dev problems, and this "
             "recipe has none; set data.dev_path (toy: data.toy.n_dev >= 1), or give the limit")
    need(g.epsilon_high is None or g.epsilon_high >= g.epsilon,
         f"grpo.epsilon_high={g.epsilon_high} is below grpo.epsilon={g.epsilon}: clip-higher widens the upper clip "
         "range; set it >= grpo.epsilon, or null")
    from mathrecipe.evaluate.generation import BACKENDS  # the generation backends (a light import)

    e = r.eval
    need(e.backend in BACKENDS, f"eval.backend: must be one of {', '.join(map(repr, BACKENDS))}; got {e.backend!r}")
    need(e.samples >= 1, f"eval.samples must be >= 1, got {e.samples}")
    need(e.max_new_tokens >= 1, f"eval.max_new_tokens must be >= 1, got {e.max_new_tokens}")
    need(e.generate_batch_size == "auto" or e.generate_batch_size >= 1,
         f"eval.generate_batch_size must be >= 1 or auto, got {e.generate_batch_size}")
    need(e.temperature >= 0, f"eval.temperature must be >= 0 (0 = greedy), got {e.temperature}")
    need(0 < e.top_p <= 1, f"eval.top_p must be in (0, 1], got {e.top_p}")
    need(e.min_p is None or 0 <= e.min_p < 1, f"eval.min_p must be null or in [0, 1), got {e.min_p}")
    need(e.kv_cache_gib is None or e.kv_cache_gib > 0, f"eval.kv_cache_gib must be null or > 0, got {e.kv_cache_gib}")
    need(g.min_p is None or 0 <= g.min_p < 1, f"grpo.min_p must be null or in [0, 1), got {g.min_p}")
    d = r.data
    if d.source == "files":
        need(
            any([d.sft_path, d.grpo_path, d.test_path]),
            "data.source=files needs data.sft_path, data.grpo_path and/or data.test_path",
        )
        need(not (r.sft.enabled and not d.sft_path), "sft.enabled is true but data.sft_path is not set")
        need(not (r.grpo.enabled and not d.grpo_path), "grpo.enabled is true but data.grpo_path is not set")
        need(d.test_path is not None, "data.source=files needs data.test_path (the test problems, held out)")
    b = d.build
    need(b.ngram >= 1, f"data.build.ngram must be >= 1, got {b.ngram}")
    need(0 <= b.min_overlap <= 1, f"data.build.min_overlap must be in [0, 1], got {b.min_overlap}")
    need(b.num_proc >= 1, f"data.build.num_proc must be >= 1, got {b.num_proc}")
    validate_sources(b.sources)
    if d.source == "toy":
        stray = [k for k in ("sft_path", "grpo_path", "test_path", "dev_path") if getattr(d, k)]
        need(not stray, f"data.{stray[0] if stray else ''} is read only with data.source=files (the toy generates its "
                        "data): set data.source=files, or drop the path")
    if r.model.name_or_path == "toy":
        need(d.source == "toy", "model.name_or_path=toy builds its tokenizer from the toy task: set data.source=toy")


def validate_sources(sources: list[SourceConfig]) -> None:
    """``data.build.sources``: each names a kind and a path and feeds a set, names are unique, a sample's
    accuracy range is ordered within [0, 1]. (Whether the kind is known is checked by the build, which holds the
    registry.)"""
    seen: dict[str, int] = {}
    for i, src in enumerate(sources):
        key = f"data.build.sources[{i}]"
        for name in ("kind", "path"):
            if not getattr(src, name):
                raise RecipeError(f"{key}.{name} is not set: each source needs a kind (its row schema) and a path "
                                  "(hub id or local file)")
        if not (src.sft or src.grpo):
            raise RecipeError(f"{key} feeds no set: set sft: true and/or grpo: true (or leave the source out)")
        name = src.name or src.kind
        if name in seen:
            raise RecipeError(f"{key}: the name {name!r} is also sources[{seen[name]}]'s; give one a name (the data "
                              "report counts rows per source name)")
        seen[name] = i
        s = src.sample
        if s is not None and not 0 <= s.mid_min_accuracy <= s.mid_max_accuracy <= 1:
            raise RecipeError(f"{key}.sample: mid_min_accuracy <= mid_max_accuracy, both in [0, 1]")
