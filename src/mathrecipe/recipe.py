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
from mathrecipe.prompts import SYSTEM_PROMPT


class RecipeError(MathRecipeError):
    """A recipe that cannot run; the message names the key and the fix."""


@dataclass
class ToyModelConfig:
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    vocab_size: int = 384


@dataclass
class ModelConfig:
    # "toy" builds the tiny Llama model and its tokenizer from the toy data; otherwise an HF folder or hub id.
    name_or_path: str = "toy"
    toy: ToyModelConfig = field(default_factory=ToyModelConfig)
    attn_implementation: str | None = None  # e.g. "flash_attention_2" on GPU
    trust_remote_code: bool = False


@dataclass
class ToyDataConfig:
    n_sft: int = 1200
    n_test: int = 200
    n_rl: int = 3000
    verbose_fraction: float = 0.7  # share of teacher traces with redundant "Wait, let me verify" re-checking
    max_verify_blocks: int = 2
    n_dev: int = 100  # development problems for sft.select=best, disjoint from the reported held-out set


@dataclass
class BuildConfig:
    """``mathrecipe data build``: the paper's SFT and GRPO sets (defaults = the paper's recipe, see paper-notes)."""

    output_dir: str = "data/built"
    tokenizer: str | None = None  # counts trace tokens; default: model.name_or_path
    # OpenR1-Math-220k: n_long problems whose kept trace is long (> long_min_tokens) with accuracy (share of
    # generations verified correct) > long_min_accuracy, plus n_mid with accuracy in [mid_min, mid_max]. null n: all.
    openr1: str | None = "open-r1/OpenR1-Math-220k"
    openr1_split: str = "train"
    long_min_tokens: int = 12800
    long_min_accuracy: float = 0.5
    n_long: int | None = 3000
    mid_min_accuracy: float = 0.5
    mid_max_accuracy: float = 0.75
    n_mid: int | None = 3000
    openr1_hard: str | None = "hoanganhpham/openr1_hard"  # same schema as OpenR1-Math; all rows are kept
    openr1_hard_split: str = "train"
    light_r1: str | None = "qihoo360/Light-R1-SFTData"  # stage 2: SFT traces, and the GRPO problems
    light_r1_file: str = "stage2-3k.json"
    max_tokens: int | None = None  # drop kept traces longer than this (null: keep all)
    decontaminate: list[str] = field(default_factory=lambda: ["math500", "aime24", "aime25", "amc23"])
    benchmark_dir: str | None = None  # local benchmark files (the evaluation registry's names); default: the hub
    ngram: int = 8
    # 0: any shared n-gram drops a problem; 0.5: the problem holds half of a benchmark item's n-grams, or half its
    # own are that item's (ignores boilerplate)
    min_overlap: float = 0.0
    num_proc: int = 1
    batch_size: int = 1000


@dataclass
class DataConfig:
    # "toy" generates the synthetic task; "files" reads the paths below (JSONL / parquet / a saved dataset folder).
    source: Literal["toy", "files"] = "toy"
    toy: ToyDataConfig = field(default_factory=ToyDataConfig)
    sft_path: str | None = None  # rows with `prompt`/`completion` or `messages` (TRL conversational)
    grpo_path: str | None = None  # rows with `prompt` (messages or text) and `answer`
    eval_path: str | None = None  # rows with `problem` and `answer`: the reported held-out problems
    dev_path: str | None = None  # rows with `problem` and `answer`: sft.select=best picks on these, not eval_path
    problem_column: str = "problem"
    answer_column: str = "answer"
    system_prompt: str | None = SYSTEM_PROMPT  # null or "": no system turn
    build: BuildConfig = field(default_factory=BuildConfig)


@dataclass
class SFTConfig:
    enabled: bool = True
    epochs: int = 10
    batch_size: int = 16  # per device
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1.5e-3
    lr_scheduler: str = "cosine"
    warmup_steps: int = 40
    weight_decay: float = 0.01
    max_length: int | None = 512
    packing: bool = False
    select: Literal["last", "best"] = "last"  # which epoch GRPO starts from: the last, or best dev-set accuracy
    eval_each_epoch: bool = True
    save_steps: int | None = None  # extra resume points within an epoch (a checkpoint is always saved per epoch)
    save_only_model: bool = False  # true: weights only; a resume restarts the optimizer (not the LR schedule)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU that has it, fp32 on CPU
    # None: off on CPU (2.4x slower there); on a GPU, on only when `mathrecipe plan` says the stage needs it
    gradient_checkpointing: bool | None = None
    use_liger_kernel: bool | None = None  # None: on where supported (CUDA, liger-kernel installed, known model type)
    optim: str = "adamw_torch"
    logging_steps: int = 25
    deepspeed: str | None = None  # a DeepSpeed JSON, e.g. recipes/accelerate/deepspeed_zero3.json
    fsdp: str | None = None  # an FSDP config JSON (full_shard, auto_wrap), e.g. recipes/accelerate/fsdp2.json
    extra: dict[str, Any] = field(default_factory=dict)  # passed to trl.SFTConfig as is


@dataclass
class CosineConfig:
    max_len: int = 160
    unit: Literal["tokens", "chars"] = "tokens"
    min_value_correct: float = 0.1
    max_value_correct: float = 1.0
    min_value_wrong: float = -0.1
    max_value_wrong: float = -1.0


@dataclass
class LengthConfig:
    unit: Literal["tokens", "chars"] = "tokens"


@dataclass
class RewardsConfig:
    format_weight: float = 1.0
    cosine_weight: float = 1.0
    length_weight: float = 1.0
    cosine: CosineConfig = field(default_factory=CosineConfig)
    length: LengthConfig = field(default_factory=LengthConfig)


@dataclass
class GRPOConfig:
    enabled: bool = True
    num_generations: int = 8
    batch_size: int = 64  # completions per device per step (num_generations divides it)
    gradient_accumulation_steps: int = 1
    max_steps: int = 40
    learning_rate: float = 5e-5
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    beta: float = 0.04
    epsilon: float = 0.2
    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float | None = None
    max_completion_length: int = 160
    max_kl: float | None = 0.5  # collapse guard: stop when the logged KL passes this (None: off; needs beta > 0)
    # TRL 1.16 defaults to "dapo" (tokens normalised over the batch); the paper's TRL normalised per sequence ("grpo")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    mask_truncated_completions: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool | None = None
    # rollouts: hf = transformers generate; paged = TRL's continuous batching; vllm = vLLM (GPU)
    backend: Literal["hf", "paged", "vllm"] = "hf"
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    vllm_importance_sampling_correction: bool = True  # TRL 1.16 default; the paper's TRL had no such correction
    logging_steps: int = 10
    save_steps: int | None = None
    deepspeed: str | None = None  # a DeepSpeed JSON, e.g. recipes/accelerate/deepspeed_zero2.json
    fsdp: str | None = None  # an FSDP config JSON
    extra: dict[str, Any] = field(default_factory=dict)  # passed to trl.GRPOConfig as is


@dataclass
class EvalConfig:
    samples: int = 4  # per problem; accuracy = mean pass@1 over them
    temperature: float = 0.6  # the R1 convention (the paper recipes and --preset r1 use it too)
    top_p: float = 1.0
    min_p: float | None = None
    max_new_tokens: int = 160
    batch_size: int | Literal["auto"] = 400  # sequences per generate() call; auto: the most the KV budget holds
    kv_cache_gib: float | None = None  # KV-cache budget per device for batch_size=auto (None: measured free memory)
    backend: str = "hf"  # a generation backend (evaluate.generation.BACKENDS): hf = transformers, vllm = vLLM (GPU)
    stop_at_think: bool = False


@dataclass
class HealthConfig:
    """GRPO alarms, listed in report.md; with ``stop: true`` an alarm stops training like the collapse guard."""

    max_truncation: float = 0.2  # share of completions cut at grpo.max_completion_length
    max_zero_std_groups: float = 0.5  # share of prompt groups whose rewards are all equal (no learning signal)
    window: int = 10  # steps over which the alarms are judged (rolling means)
    trend: float = 0.05  # "format up while accuracy down": both halves of the window differ by more than this
    max_entropy_growth: float = 3.0  # entropy over the window / entropy at the first step
    stop: bool = False


@dataclass
class Recipe:
    output_dir: str = "runs/toy"
    seed: int = 0
    report_to: str | list[str] = "none"  # both stages: none, tensorboard, wandb, ... (or a list)
    # the `accelerate launch --config_file` this recipe is meant for (process count checked against batch sizes)
    accelerate_config: str | None = None
    # judge the paper's two effects in report.md (thresholds in mathrecipe.report, set for the toy task): true, false,
    # or null = only with data.source=toy (on other data those thresholds mean nothing)
    verdicts: bool | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    health: HealthConfig = field(default_factory=HealthConfig)

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
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f"did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
            raise RecipeError(
                f"unknown recipe key '{key}'. {hint} Valid keys here: {', '.join(names)}".replace(".  ", ". ")
            )
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
    recipe = _build(Recipe, tree)
    validate(recipe)
    return recipe


# TRL arguments each stage sets from the recipe, and the recipe key to use instead of passing them through *.extra
# (passing one there used to raise a bare TypeError inside TRL).
SFT_OWNED = {
    "output_dir": "output_dir", "num_train_epochs": "sft.epochs", "per_device_train_batch_size": "sft.batch_size",
    "gradient_accumulation_steps": "sft.gradient_accumulation_steps", "learning_rate": "sft.learning_rate",
    "lr_scheduler_type": "sft.lr_scheduler", "warmup_steps": "sft.warmup_steps", "weight_decay": "sft.weight_decay",
    "max_length": "sft.max_length", "packing": "sft.packing", "optim": "sft.optim", "save_strategy": "sft.save_steps",
    "save_steps": "sft.save_steps", "save_only_model": "sft.save_only_model", "logging_steps": "sft.logging_steps",
    "report_to": "report_to", "seed": "seed", "deepspeed": "sft.deepspeed", "fsdp": "sft.fsdp",
    "fsdp_config": "sft.fsdp", "bf16": "sft.precision", "fp16": "sft.precision", "use_cpu": "sft.precision",
    "gradient_checkpointing": "sft.gradient_checkpointing", "completion_only_loss": "(always on: the trace is trained)",
    "use_liger_kernel": "sft.use_liger_kernel",
}

GRPO_OWNED = {
    "output_dir": "output_dir", "per_device_train_batch_size": "grpo.batch_size",
    "gradient_accumulation_steps": "grpo.gradient_accumulation_steps", "num_generations": "grpo.num_generations",
    "max_completion_length": "grpo.max_completion_length", "max_steps": "grpo.max_steps",
    "learning_rate": "grpo.learning_rate", "lr_scheduler_type": "grpo.lr_scheduler",
    "warmup_steps": "grpo.warmup_steps", "beta": "grpo.beta", "epsilon": "grpo.epsilon",
    "temperature": "grpo.temperature", "top_p": "grpo.top_p", "min_p": "grpo.min_p", "loss_type": "grpo.loss_type",
    "scale_rewards": "grpo.scale_rewards", "mask_truncated_completions": "grpo.mask_truncated_completions",
    "reward_weights": "rewards.*_weight", "use_vllm": "grpo.backend", "vllm_mode": "grpo.vllm_mode",
    "vllm_gpu_memory_utilization": "grpo.vllm_gpu_memory_utilization",
    "vllm_importance_sampling_correction": "grpo.vllm_importance_sampling_correction",
    "use_transformers_paged": "grpo.backend", "use_transformers_continuous_batching": "grpo.backend",
    "logging_steps": "grpo.logging_steps", "save_strategy": "grpo.save_steps", "save_steps": "grpo.save_steps",
    "report_to": "report_to", "seed": "seed", "deepspeed": "grpo.deepspeed", "fsdp": "grpo.fsdp",
    "fsdp_config": "grpo.fsdp", "bf16": "grpo.precision", "fp16": "grpo.precision", "use_cpu": "grpo.precision",
    "gradient_checkpointing": "grpo.gradient_checkpointing",
}


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
    need(r.sft.batch_size >= 1, f"sft.batch_size must be >= 1, got {r.sft.batch_size}")
    need(r.sft.learning_rate > 0, f"sft.learning_rate must be > 0, got {r.sft.learning_rate}")
    g = r.grpo
    need(g.num_generations >= 2, f"grpo.num_generations must be >= 2 (GRPO compares completions), got {g.num_generations}")
    gen_batch = g.batch_size * g.gradient_accumulation_steps
    need(
        gen_batch % g.num_generations == 0,
        f"grpo.num_generations={g.num_generations} does not divide the per-device generation batch "
        f"grpo.batch_size x grpo.gradient_accumulation_steps = {gen_batch}; "
        f"set grpo.batch_size to a multiple of {g.num_generations}",
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
    c = r.rewards.cosine
    need(c.max_len >= 1, f"rewards.cosine.max_len must be >= 1, got {c.max_len}")
    if c.unit == "tokens":
        need(
            c.max_len <= g.max_completion_length,
            f"rewards.cosine.max_len={c.max_len} tokens exceeds grpo.max_completion_length={g.max_completion_length}: "
            "no completion can reach it, so the cosine reward's end value is never used. "
            f"Set rewards.cosine.max_len <= {g.max_completion_length} (or rewards.cosine.unit=chars)",
        )
    from mathrecipe.evaluate.generation import BACKENDS  # the generation backends (a light import)

    e = r.eval
    need(e.backend in BACKENDS, f"eval.backend: must be one of {', '.join(map(repr, BACKENDS))}; got {e.backend!r}")
    need(e.samples >= 1, f"eval.samples must be >= 1, got {e.samples}")
    need(e.max_new_tokens >= 1, f"eval.max_new_tokens must be >= 1, got {e.max_new_tokens}")
    need(e.batch_size == "auto" or e.batch_size >= 1, f"eval.batch_size must be >= 1 or auto, got {e.batch_size}")
    need(e.temperature >= 0, f"eval.temperature must be >= 0 (0 = greedy), got {e.temperature}")
    need(0 < e.top_p <= 1, f"eval.top_p must be in (0, 1], got {e.top_p}")
    need(e.min_p is None or 0 <= e.min_p < 1, f"eval.min_p must be null or in [0, 1), got {e.min_p}")
    need(e.kv_cache_gib is None or e.kv_cache_gib > 0, f"eval.kv_cache_gib must be null or > 0, got {e.kv_cache_gib}")
    need(g.min_p is None or 0 <= g.min_p < 1, f"grpo.min_p must be null or in [0, 1), got {g.min_p}")
    d = r.data
    if d.source == "files":
        need(
            any([d.sft_path, d.grpo_path, d.eval_path]),
            "data.source=files needs data.sft_path, data.grpo_path and/or data.eval_path",
        )
        need(not (r.sft.enabled and not d.sft_path), "sft.enabled is true but data.sft_path is not set")
        need(not (r.grpo.enabled and not d.grpo_path), "grpo.enabled is true but data.grpo_path is not set")
        need(d.eval_path is not None, "data.source=files needs data.eval_path (the held-out problems)")
    b = d.build
    need(b.ngram >= 1, f"data.build.ngram must be >= 1, got {b.ngram}")
    need(0 <= b.mid_min_accuracy <= b.mid_max_accuracy <= 1,
         "data.build.mid_min_accuracy <= data.build.mid_max_accuracy, both in [0, 1]")
    need(0 <= b.min_overlap <= 1, f"data.build.min_overlap must be in [0, 1], got {b.min_overlap}")
    need(b.num_proc >= 1, f"data.build.num_proc must be >= 1, got {b.num_proc}")
    if d.source == "toy":
        stray = [k for k in ("sft_path", "grpo_path", "eval_path", "dev_path") if getattr(d, k)]
        need(not stray, f"data.{stray[0] if stray else ''} is read only with data.source=files (the toy generates its "
                        "data): set data.source=files, or drop the path")
    if r.model.name_or_path == "toy":
        need(d.source == "toy", "model.name_or_path=toy builds its tokenizer from the toy task: set data.source=toy")


def dump_recipe(r: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(r.to_dict(), sort_keys=False))
