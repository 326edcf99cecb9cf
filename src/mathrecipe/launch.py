"""Launch configs a recipe names (``accelerate_config``, ``sft.deepspeed``/``grpo.deepspeed``, ``sft.fsdp``/``grpo.fsdp``),
checked before anything loads: the file exists and parses, every key is one DeepSpeed / transformers / accelerate
knows, and the process count agrees with the batch sizes.

Why up front: DeepSpeed ignores unknown top-level keys (a typo silently drops a setting), transformers reports a
DeepSpeed batch mismatch only after the model has loaded, and TRL checks the GRPO generation batch only once the
processes exist. deepspeed itself is not installed everywhere, so its schema is spelled out here (read from
deepspeed/runtime/constants.py, runtime/config.py, runtime/zero/config.py and runtime/zero/offload_config.py).
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mathrecipe.recipe import Recipe, RecipeError

# DeepSpeed top-level keys (runtime/constants.py, runtime/config.py and the sections it delegates to).
DEEPSPEED_KEYS = frozenset({
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "optimizer", "scheduler",
    "fp16", "bf16", "bfloat16", "amp", "torch_autocast", "gradient_clipping", "zero_optimization",
    "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "steps_per_print", "wall_clock_breakdown",
    "memory_breakdown", "dump_state", "prescale_gradients", "gradient_predivide_factor", "gradient_allreduce_op",
    "sparse_gradients", "communication_data_type", "seq_parallel_communication_data_type", "disable_allgather",
    "vocabulary_size", "graph_harvesting", "activation_checkpointing", "flops_profiler", "tensorboard", "wandb",
    "csv_monitor", "comet", "comms_logger", "aio", "elasticity", "pipeline", "checkpoint", "data_types",
    "compression_training", "data_efficiency", "curriculum_learning", "autotuning", "sparse_attention", "nebula",
    "datastates", "eigenvalue", "progressive_layer_drop", "quantize_training", "weight_quantization",
    "hybrid_engine", "compile", "timers", "tensor_parallel", "expert_parallel", "dataloader_drop_last",
    "use_data_before_expert_parallelism", "zenflow",
})

# zero_optimization keys (runtime/zero/config.py: field names and their "stage3_" aliases; both are accepted).
ZERO_KEYS = frozenset({
    "stage", "contiguous_gradients", "reduce_scatter", "reduce_bucket_size", "use_multi_rank_bucket_allreduce",
    "allgather_partitions", "allgather_bucket_size", "overlap_comm", "load_from_fp32_weights", "elastic_checkpoint",
    "offload_param", "offload_optimizer", "zenflow", "sub_group_size", "cpu_offload_param",
    "cpu_offload_use_pin_memory", "cpu_offload", "prefetch_bucket_size", "stage3_prefetch_bucket_size",
    "param_persistence_threshold", "stage3_param_persistence_threshold", "model_persistence_threshold",
    "stage3_model_persistence_threshold", "max_live_parameters", "stage3_max_live_parameters",
    "max_reuse_distance", "stage3_max_reuse_distance", "gather_16bit_weights_on_model_save",
    "stage3_gather_16bit_weights_on_model_save", "module_granularity_threshold",
    "stage3_module_granularity_threshold", "use_all_reduce_for_fetch_params",
    "stage3_use_all_reduce_for_fetch_params", "allgather_sequential", "stage3_allgather_sequential",
    "partition_stream_chunk_size", "stage3_partition_stream_chunk_size", "stage3_gather_fp16_weights_on_model_save",
    "ignore_unused_parameters", "legacy_stage1", "round_robin_gradients", "zero_hpz_partition_size",
    "zero_quantized_weights", "zero_quantized_nontrainable_weights", "zero_quantized_gradients",
    "zeropp_loco_param", "mics_shard_size", "mics_hierarchical_params_gather", "memory_efficient_linear",
    "pipeline_loading_checkpoint", "override_module_apply", "log_trace_cache_warnings", "enable_sanity_checks",
    "save_muon_momentum_buffer_in_memory", "leaf_module",
})
OFFLOAD_PARAM_KEYS = frozenset({"device", "nvme_path", "buffer_count", "buffer_size", "max_in_cpu", "pin_memory"})
OFFLOAD_OPTIMIZER_KEYS = frozenset({
    "device", "nvme_path", "buffer_count", "pin_memory", "pipeline_read", "pipeline_write", "fast_init", "ratio",
    "super_offload", "convert_grad_on_cpu", "cpuadam_cores_perc",
})
PRECISION_KEYS = {
    "bf16": frozenset({"enabled", "immediate_grad_update", "check_grad_overflow", "bf16_master_weights_and_grads",
                       "bf16_optimizer_states"}),
    "fp16": frozenset({"enabled", "auto_cast", "loss_scale", "initial_scale_power", "loss_scale_window",
                       "hysteresis", "consecutive_hysteresis", "min_loss_scale", "fused_mode",
                       "fp16_master_weights_and_grads"}),
}

# transformers' TrainingArguments fsdp_config keys (training_args.py; a "fsdp_" prefix is stripped first).
FSDP_KEYS = frozenset({
    "version", "reshard_after_forward", "cpu_offload", "activation_checkpointing", "cpu_ram_efficient_loading",
    "state_dict_type", "auto_wrap_policy", "transformer_layer_cls_to_wrap", "min_num_params", "xla",
    "xla_fsdp_settings", "xla_fsdp_grad_ckpt", "xla_fsdp_v2", "forward_prefetch", "backward_prefetch",
    "use_orig_params", "sync_module_states", "limit_all_gathers",
})

# The per-stage keys a DeepSpeed config may name; each must match what the recipe sets (or be "auto").
_STAGES = ("sft", "grpo")


@dataclass(frozen=True)
class StageLaunch:
    """What a stage's launch files say, as far as memory and batch math need it."""

    zero_stage: int | None  # DeepSpeed ZeRO stage, None without DeepSpeed
    fsdp: dict[str, Any] | None  # the FSDP config (normalised keys), None without FSDP
    deepspeed: dict[str, Any] | None  # the DeepSpeed config as read

    @property
    def shards(self) -> str:
        """What is split across processes: "none" (DDP), "optimizer" (ZeRO-1), "gradients" (ZeRO-2 / FSDP2 without
        resharding), "weights" (ZeRO-3 / FSDP2 full shard)."""
        if self.fsdp is not None:
            reshard = str(self.fsdp.get("reshard_after_forward", True)).lower() in ("true", "full_shard", "1")
            return "weights" if reshard else "gradients"
        return {None: "none", 0: "none", 1: "optimizer", 2: "gradients", 3: "weights"}[self.zero_stage]


def _suggest(key: str, known: frozenset[str] | set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _read(path_value: str, key: str, kind: str) -> Any:
    p = Path(path_value)
    if not p.is_file():
        raise RecipeError(f"{key}={path_value}: file not found; point {key} at a {kind} file "
                          "(e.g. one under recipes/accelerate/) or remove the key")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0]
        raise RecipeError(f"{key}={path_value}: not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'} "
                          f"({first}); fix the file") from e


def _check_keys(found: dict[str, Any], known: frozenset[str] | set[str], where: str, what: str) -> None:
    for k in found:
        if k not in known:
            raise RecipeError(f"{where}: unknown {what} key '{k}'{_suggest(str(k), known)}; "
                              "fix or remove it (the file would otherwise be misread or rejected late)")


def load_deepspeed_config(path_value: str, key: str) -> dict[str, Any]:
    """Read and check a DeepSpeed JSON: top-level, zero_optimization, offload and precision keys, ZeRO stage."""
    cfg = _read(path_value, key, "DeepSpeed JSON")
    where = f"{key}={path_value}"
    if not isinstance(cfg, dict):
        raise RecipeError(f"{where}: a DeepSpeed config is a JSON object of keys (zero_optimization, bf16, ...)")
    _check_keys(cfg, DEEPSPEED_KEYS, where, "DeepSpeed")
    zero = cfg.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise RecipeError(f"{where}: zero_optimization must be an object like {{\"stage\": 3}}")
    _check_keys(zero, ZERO_KEYS, where, "zero_optimization")
    for sub, known in (("offload_param", OFFLOAD_PARAM_KEYS), ("offload_optimizer", OFFLOAD_OPTIMIZER_KEYS)):
        if isinstance(zero.get(sub), dict):
            _check_keys(zero[sub], known, where, f"zero_optimization.{sub}")
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise RecipeError(f"{where}: zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    for block, known in PRECISION_KEYS.items():
        if isinstance(cfg.get(block), dict):
            _check_keys(cfg[block], known, where, block)
    return cfg


def load_fsdp_config(path_value: str, key: str) -> dict[str, Any]:
    """Read and check an FSDP JSON for TrainingArguments(fsdp_config=...); keys are returned without "fsdp_"."""
    cfg = _read(path_value, key, "FSDP JSON")
    where = f"{key}={path_value}"
    if not isinstance(cfg, dict):
        raise RecipeError(f"{where}: an FSDP config is a JSON object of keys (version, reshard_after_forward, ...)")
    norm = {(k[5:] if k.startswith("fsdp_") else k): v for k, v in cfg.items()}
    _check_keys(norm, FSDP_KEYS, where, "FSDP")
    version = int(norm.get("version", 2))
    if version not in (1, 2):
        raise RecipeError(f"{where}: version must be 1 or 2 (FSDP2 recommended), got {norm.get('version')!r}")
    return norm


@functools.cache
def _launch_arg_names() -> frozenset[str]:
    from accelerate.commands.launch import launch_command_parser

    return frozenset(a.dest for a in launch_command_parser()._actions)


def load_accelerate_config(path_value: str, key: str = "accelerate_config") -> dict[str, Any]:
    """Read and check an ``accelerate launch --config_file``: its keys against accelerate's config dataclass, the
    nested deepspeed_config / fsdp_config / dynamo_config keys against ``accelerate launch``'s arguments, and the
    values with accelerate's own loader."""
    from accelerate.commands.config.config_args import ClusterConfig, SageMakerConfig

    cfg = _read(path_value, key, "accelerate config (YAML)")
    where = f"{key}={path_value}"
    if not isinstance(cfg, dict):
        raise RecipeError(f"{where}: an accelerate config is a mapping (distributed_type, num_processes, ...)")
    cls = SageMakerConfig if cfg.get("compute_environment") == "AMAZON_SAGEMAKER" else ClusterConfig
    known = set(cls.__dataclass_fields__) | {"fp16", "dynamo_backend"}  # the last two are converted on load
    _check_keys(cfg, known, where, "accelerate config")
    args = _launch_arg_names()
    for section, prefix in (("deepspeed_config", ""), ("fsdp_config", "fsdp_"), ("dynamo_config", "dynamo_")):
        sub = cfg.get(section) or {}
        if not isinstance(sub, dict):
            raise RecipeError(f"{where}: {section} must be a mapping")
        for k in sub:
            name = k if (not prefix or k.startswith(prefix)) else prefix + k
            if name not in args:
                raise RecipeError(f"{where}: unknown {section} key '{k}'{_suggest(name, args)}; fix or remove it")
    n = cfg.get("num_processes")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise RecipeError(f"{where}: num_processes must be a whole number >= 1, got {n!r}")
    try:  # accelerate's own loader checks the values (distributed_type, compute_environment, ...)
        loader = cls.from_json_file if Path(path_value).suffix == ".json" else cls.from_yaml_file
        loader(path_value)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{where}: accelerate cannot read it: {str(e).splitlines()[0]}") from e
    return cfg


def process_count(recipe: Recipe) -> int | None:
    """Processes the stages will run with: the launch's WORLD_SIZE when running, else ``accelerate_config``'s
    num_processes, else None (unknown)."""
    ws = os.environ.get("WORLD_SIZE")
    if ws and ws.isdigit() and int(ws) >= 1:
        return int(ws)
    if recipe.accelerate_config:
        return load_accelerate_config(recipe.accelerate_config).get("num_processes")
    return None


def stage_launch(recipe: Recipe, stage: str) -> StageLaunch:
    """The DeepSpeed / FSDP settings of one stage ("sft" or "grpo"), read and checked."""
    s = getattr(recipe, stage)
    ds = load_deepspeed_config(s.deepspeed, f"{stage}.deepspeed") if s.deepspeed else None
    fsdp = load_fsdp_config(s.fsdp, f"{stage}.fsdp") if s.fsdp else None
    zero = (ds.get("zero_optimization") or {}).get("stage", 0) if ds is not None else None
    return StageLaunch(zero_stage=zero, fsdp=fsdp, deepspeed=ds)


def _explicit(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if node == "auto" else node


def grpo_generation_batch(recipe: Recipe, processes: int) -> int:
    """TRL's global generation batch: per-device batch x processes x steps_per_generation (default: the gradient
    accumulation), or ``grpo.extra.generation_batch_size`` when set."""
    g = recipe.grpo
    if g.extra.get("generation_batch_size") is not None:
        return int(g.extra["generation_batch_size"])
    spg = g.extra.get("steps_per_generation") or g.gradient_accumulation_steps
    return g.per_device_train_batch_size * processes * int(spg)


def _check_stage(recipe: Recipe, stage: str, procs: int | None) -> None:
    s = getattr(recipe, stage)
    if s.deepspeed and s.fsdp:
        raise RecipeError(f"{stage}.deepspeed and {stage}.fsdp are both set; a stage runs under one of them: "
                          f"remove {stage}.fsdp or {stage}.deepspeed")
    launch = stage_launch(recipe, stage)
    ds = launch.deepspeed
    if ds is None:
        return
    where = f"{stage}.deepspeed={s.deepspeed}"
    checks = [
        ("train_micro_batch_size_per_gpu", s.per_device_train_batch_size, f"{stage}.per_device_train_batch_size"),
        ("gradient_accumulation_steps", s.gradient_accumulation_steps, f"{stage}.gradient_accumulation_steps"),
    ]
    for ds_key, want, rkey in checks:
        got = _explicit(ds, ds_key)
        if got is not None and got != want:
            raise RecipeError(f"{where}: {ds_key}={got} but {rkey}={want}; set it to \"auto\" (or {want})")
    tbs = _explicit(ds, "train_batch_size")
    per = s.per_device_train_batch_size * s.gradient_accumulation_steps
    if tbs is not None:
        if procs is not None and tbs != per * procs:
            raise RecipeError(f"{where}: train_batch_size={tbs} but {stage}.per_device_train_batch_size x "
                              f"{stage}.gradient_accumulation_steps x {procs} processes = {per * procs}; "
                              "set it to \"auto\"")
        if procs is None and tbs % per:
            raise RecipeError(f"{where}: train_batch_size={tbs} is not a multiple of "
                              f"{stage}.per_device_train_batch_size x "
                              f"{stage}.gradient_accumulation_steps = {per}; set it to \"auto\"")
    for block in ("bf16", "fp16"):
        enabled = _explicit(ds, f"{block}.enabled")
        if enabled is not None and s.precision != "auto" and bool(enabled) != (s.precision == block):
            raise RecipeError(f"{where}: {block}.enabled={str(enabled).lower()} contradicts "
                              f"{stage}.precision={s.precision}; set {block}.enabled to \"auto\"")
    clip = _explicit(ds, "gradient_clipping")
    want_clip = s.extra.get("max_grad_norm", 1.0)
    if clip is not None and float(clip) != float(want_clip):
        raise RecipeError(f"{where}: gradient_clipping={clip} but the trainer clips at max_grad_norm={want_clip}; "
                          "set gradient_clipping to \"auto\"")
    for block in ("optimizer", "scheduler"):
        if block in ds:
            rkey = f"{stage}.optim" if block == "optimizer" else f"{stage}.lr_scheduler"
            raise RecipeError(f"{where}: the '{block}' block would replace {rkey} without a word; remove it "
                              f"and set {rkey} in the recipe")


def validate_launch(recipe: Recipe) -> None:
    """Check every launch file the recipe names, and the process count against the batch sizes.

    Raises RecipeError (one line: the key, the file, the fix). Nothing is loaded or started.
    """
    acc = load_accelerate_config(recipe.accelerate_config) if recipe.accelerate_config else None
    ws = os.environ.get("WORLD_SIZE")
    procs = process_count(recipe)
    if acc is not None:
        where = f"accelerate_config={recipe.accelerate_config}"
        n = acc.get("num_processes")
        if ws and ws.isdigit() and n is not None and int(ws) != n:
            raise RecipeError(f"{where}: num_processes={n} but this run has WORLD_SIZE={ws}; launch with "
                              f"`accelerate launch --config_file {recipe.accelerate_config}` (or change the "
                              "recipe's batch sizes for this process count and num_processes to match)")
        dist = str(acc.get("distributed_type", ""))
        named = [f"{st}.{k}" for st in _STAGES for k in ("deepspeed", "fsdp") if getattr(getattr(recipe, st), k)]
        if dist in ("DEEPSPEED", "FSDP") and named:
            raise RecipeError(f"{where}: distributed_type={dist} and {named[0]} is set too; each stage brings its "
                              "own config, so launch with distributed_type MULTI_GPU "
                              "(recipes/accelerate/multi_gpu.yaml)")
        mp = str(acc.get("mixed_precision", "no"))
        for st in _STAGES:
            if mp in ("bf16", "fp16") and getattr(recipe, st).precision == "fp32":
                raise RecipeError(f"{where}: mixed_precision={mp} would turn on {mp} autocast although "
                                  f"{st}.precision=fp32; set mixed_precision: 'no' (the recipe decides)")
    for st in _STAGES:
        _check_stage(recipe, st, procs)
    if procs is not None:
        g = recipe.grpo
        gen = grpo_generation_batch(recipe, procs)
        if gen % g.num_generations:
            raise RecipeError(f"grpo.num_generations={g.num_generations} does not divide the global generation "
                              f"batch {gen} ({procs} processes); change grpo.per_device_train_batch_size or the "
                              "process count")
        if g.extra.get("generation_batch_size") is not None and gen % (g.per_device_train_batch_size * procs):
            raise RecipeError(f"grpo.extra.generation_batch_size={gen} is not a multiple of "
                              "grpo.per_device_train_batch_size x "
                              f"{procs} processes = {g.per_device_train_batch_size * procs}; change one of them")
