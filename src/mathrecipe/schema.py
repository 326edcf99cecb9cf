"""The recipe's sections for the model, the data (and its build), SFT, evaluation and health alarms, and the old
spellings of renamed or moved keys.

Every field is documented where it is declared, as TRL's config classes do it: ``field(metadata={"help": ...})``
says what it means, its unit, and the value the paper recipes (``recipes/paper/``) hold where they set one; the
default is the field's default (= the toy recipe, ``recipes/toy.yaml``). ``mathrecipe inspect --keys`` prints them
all. ``mathrecipe.recipe`` holds the whole ``Recipe`` (with the GRPO and rewards sections), loading and checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mathrecipe.prompts import SYSTEM_PROMPT


def _paper_sources() -> list[SourceConfig]:
    """The paper's stage-1 sources (paper-notes, Stage 1): the OpenR1-Math sample, openr1_hard, Light-R1 stage 2."""
    return [SourceConfig(kind="openr1", path="open-r1/OpenR1-Math-220k", sample=SampleConfig()),
            SourceConfig(kind="openr1", name="openr1_hard", path="hoanganhpham/openr1_hard"),
            SourceConfig(kind="light_r1", path="qihoo360/Light-R1-SFTData", data_files="stage2-3k.json", grpo=True)]


# -------------------------------------------------------------------------------------------------- model


@dataclass
class ToyModelConfig:
    """The toy's tiny Llama, built from nothing when ``model.name_or_path`` is ``toy`` (1.1M parameters)."""

    hidden_size: int = field(default=128, metadata={"help": "hidden size (width) of the toy Llama"})
    num_layers: int = field(default=4, metadata={"help": "transformer layers of the toy Llama"})
    num_heads: int = field(default=4, metadata={"help": "attention heads (each also a KV head) of the toy Llama"})
    intermediate_size: int = field(default=512, metadata={"help": "MLP width of the toy Llama"})
    vocab_size: int = field(default=384, metadata={"help": (
        "tokens of the toy's BPE tokenizer, trained on the toy task (384: every word of the system prompt is one "
        "token)")})


@dataclass
class ModelConfig:
    """The starting model of the run (SFT starts from it; GRPO too when SFT is off)."""

    name_or_path: str = field(default="toy", metadata={"help": (
        "an HF model folder, a GGUF file or a hub id; toy: build the tiny Llama and its tokenizer from the toy task. "
        "Paper recipes: deepseek-ai/DeepSeek-R1-Distill-Qwen-14B (7B, 1.5B), nvidia/OpenMath-Nemotron-14B, "
        "Qwen/Qwen3-14B")})
    toy: ToyModelConfig = field(default_factory=ToyModelConfig, metadata={"help": "the toy model's shape"})
    attn_implementation: str | None = field(default=None, metadata={"help": (
        "transformers' attention kernel (sdpa, eager, flash_attention_2); null: transformers' choice. Paper "
        "recipes: flash_attention_2 for the 14B SFT recipes, sdpa for the GRPO-only ones")})
    trust_remote_code: bool = field(default=False, metadata={"help": (
        "let transformers run the model folder's own Python code (models not built into transformers)")})


# --------------------------------------------------------------------------------------------------- data


@dataclass
class ToyDataConfig:
    """The toy task's splits ("Compute a +- b +- c", seeded by the recipe's seed), used with ``data.source: toy``."""

    n_sft: int = field(default=1200, metadata={"help": "SFT problems, each with one teacher trace"})
    n_test: int = field(default=200, metadata={"help": "test problems (held out) reported by the in-run evaluation"})
    n_grpo: int = field(default=3000, metadata={"help": "GRPO problems (prompts with answers)"})
    verbose_fraction: float = field(default=0.7, metadata={"help": (
        "share of teacher traces padded with redundant 'Wait, let me verify.' re-checks (0-1): the length GRPO "
        "learns to cut")})
    max_verify_blocks: int = field(default=2, metadata={"help": "most re-check blocks in a padded trace"})
    n_dev: int = field(default=100, metadata={"help": (
        "development problems for sft.select=best, disjoint from the reported test problems")})


@dataclass
class SampleConfig:
    """The paper's OpenR1-Math sample, as a source's ``sample`` filter: ``n_long`` problems whose kept trace is long
    with accuracy above ``long_min_accuracy``, plus ``n_mid`` with accuracy in [``mid_min_accuracy``,
    ``mid_max_accuracy``] drawn from the rest (seeded by the recipe's seed). Accuracy: the share of a problem's
    generations verified correct."""

    long_min_tokens: int = field(default=12800, metadata={"help": (
        "a trace is long above this many tokens (its kept, shortest correct trace, under data.build.tokenizer). "
        "Paper: 12800")})
    long_min_accuracy: float = field(default=0.5, metadata={"help": (
        "long problems need an accuracy above this (0-1). Paper: 0.5")})
    n_long: int | None = field(default=3000, metadata={"help": "long problems drawn; null: all. Paper: 3000"})
    mid_min_accuracy: float = field(default=0.5, metadata={"help": (
        "lowest accuracy of the middling problems (0-1, inclusive). Paper: 0.5")})
    mid_max_accuracy: float = field(default=0.75, metadata={"help": (
        "highest accuracy of the middling problems (0-1, inclusive). Paper: 0.75")})
    n_mid: int | None = field(default=3000, metadata={"help": "middling problems drawn; null: all. Paper: 3000"})


@dataclass
class SourceConfig:
    """One training-data source of ``mathrecipe data build``: where its rows are and how they are read (``kind``:
    its normaliser in ``mathrecipe.data.sources.SOURCES``), which set they feed, and its filter."""

    kind: str = field(default="", metadata={"help": (
        "the source's row schema, i.e. its normaliser: openr1 (OpenR1-Math: problem, answer, generations, "
        "correctness_math_verify) or light_r1 (Light-R1-SFTData: conversations)")})
    path: str = field(default="", metadata={"help": (
        "hub dataset id, or a local .jsonl/.json/.parquet file or saved dataset folder in the kind's schema")})
    name: str | None = field(default=None, metadata={"help": (
        "the source's name in the data report (null: its kind); unique among the sources")})
    split: str = field(default="train", metadata={"help": "the hub dataset's split"})
    data_files: str | None = field(default=None, metadata={"help": (
        "one file of the hub repository (e.g. Light-R1's stage2-3k.json); null: the whole split. Paper: "
        "stage2-3k.json for Light-R1")})
    sample: SampleConfig | None = field(default=None, metadata={"help": (
        "keep only the paper's long/mid-accuracy sample of this source (null: every usable row). Paper: on "
        "OpenR1-Math-220k")})
    sft: bool = field(default=True, metadata={"help": "its traces go into the SFT set"})
    grpo: bool = field(default=False, metadata={"help": (
        "its problems, with their answers, go into the GRPO set. Paper: Light-R1 stage 2")})


@dataclass
class BuildConfig:
    """``mathrecipe data build``: the SFT and GRPO sets from a table of sources, merged, deduplicated (shortest
    correct trace per problem), decontaminated and length-checked. The defaults are the paper's recipe."""

    output_dir: str = field(default="data/built", metadata={"help": (
        "where sft/, grpo/ and data_report.{json,md,png} are written")})
    tokenizer: str | None = field(default=None, metadata={"help": (
        "tokenizer that counts trace tokens (folder or hub id); null: model.name_or_path's. Paper recipes: the "
        "base model's")})
    sources: list[SourceConfig] = field(default_factory=_paper_sources, metadata={"help": (
        "the training-data sources, in order: a list of {kind, path, name, split, data_files, sample, sft, grpo}. "
        "Default: the paper's OpenR1-Math-220k sample, hoanganhpham/openr1_hard and Light-R1-SFTData stage 2 "
        "(also the GRPO problems)")})
    max_tokens: int | None = field(default=None, metadata={"help": (
        "drop kept traces longer than this many tokens (null: keep all; the report counts them either way)")})
    decontaminate: list[str] = field(default_factory=lambda: ["math500", "aime24", "aime25", "amc23"],
                                     metadata={"help": (
        "benchmarks (registry names or files) whose problems no training problem may share an n-gram with. Paper "
        "recipes: math500, aime24, aime25, amc23 (the paper describes none)")})
    benchmark_dir: str | None = field(default=None, metadata={"help": (
        "folder of local benchmark files (the registry's file names, as eval --data-dir); null: the hub")})
    ngram: int = field(default=8, metadata={"help": "words per n-gram of the decontamination. Paper recipes: 8"})
    min_overlap: float = field(default=0.0, metadata={"help": (
        "0: any shared n-gram drops a problem; s > 0: only one holding share s of a benchmark item's n-grams, or "
        "whose own n-grams are share s that item's (ignores boilerplate). Paper recipes: 0.5")})
    num_proc: int = field(default=1, metadata={"help": "processes for the datasets maps. Paper recipes: 8"})
    map_batch_size: int = field(default=1000, metadata={"help": (
        "rows per batch of the datasets maps (datasets.map's batch_size; tokenizing)")})


@dataclass
class DataConfig:
    """What the stages read: the toy task, or files (JSONL / parquet / a saved dataset folder / a hub id)."""

    source: Literal["toy", "files"] = field(default="toy", metadata={"help": (
        "toy: generate the synthetic task; files: read the paths below. Paper recipes: files")})
    toy: ToyDataConfig = field(default_factory=ToyDataConfig, metadata={"help": "the toy task's splits"})
    sft_path: str | None = field(default=None, metadata={"help": (
        "SFT rows: prompt/completion, or messages (TRL conversational). Paper recipes: data/fast-math-r1/sft "
        "(built by data build)")})
    grpo_path: str | None = field(default=None, metadata={"help": (
        "GRPO rows: prompt (messages or text) and answer. Paper recipes: data/fast-math-r1/grpo")})
    test_path: str | None = field(default=None, metadata={"help": (
        "test problems (problem, answer; held out) the in-run evaluation reports. Paper recipes: "
        "HuggingFaceH4/aime_2024")})
    dev_path: str | None = field(default=None, metadata={"help": (
        "development problems (problem, answer): sft.select=best picks the epoch on these, not on test_path")})
    problem_column: str = field(default="problem", metadata={"help": "problem column of test_path and dev_path"})
    answer_column: str = field(default="answer", metadata={"help": "answer column of test_path and dev_path"})
    system_prompt: str | None = field(default=SYSTEM_PROMPT, metadata={"help": (
        "the system turn of every prompt (SFT, GRPO, evaluation); null or '': none. Paper recipes: this default "
        "(the GRPO-only recipes: their scripts' Qwen prompt)")})
    build: BuildConfig = field(default_factory=BuildConfig, metadata={"help": "mathrecipe data build's settings"})


# ---------------------------------------------------------------------------------------------------- SFT


@dataclass
class SFTConfig:
    """Stage 1: full-parameter SFT on the whole assistant turn (TRL's SFTTrainer)."""

    enabled: bool = field(default=True, metadata={"help": "run stage 1. Paper: false in the GRPO-only recipes"})
    epochs: int = field(default=10, metadata={"help": "training epochs (TRL num_train_epochs). Paper: 10"})
    per_device_train_batch_size: int = field(default=16, metadata={"help": (
        "sequences (packed blocks with packing) per device per micro-step (TRL's field of this name). Paper: 1")})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": (
        "micro-batches per optimizer step. Paper: 8 (x 8 GPUs: 64 blocks a step)")})
    learning_rate: float = field(default=1.5e-3, metadata={"help": "peak learning rate. Paper: 1e-5"})
    lr_scheduler: str = field(default="cosine", metadata={"help": (
        "transformers scheduler name (TRL lr_scheduler_type). Paper: cosine, cut at half of a 20-epoch horizon")})
    warmup_steps: int = field(default=40, metadata={"help": "optimizer steps of linear warm-up. Paper: 0"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay. Paper: 0.0"})
    max_length: int | None = field(default=512, metadata={"help": (
        "tokens per sequence (or packed block); a longer row is refused before training, never cut. Paper: 24000")})
    packing: bool = field(default=False, metadata={"help": (
        "pack rows into max_length blocks (TRL's packing). Paper: true (strategy wrapped, through sft.extra)")})
    select: Literal["last", "best"] = field(default="last", metadata={"help": (
        "the epoch GRPO starts from: the last, or the best on data.dev_path (data.toy.n_dev). Paper: the authors "
        "picked about epoch 9 of 10 by hand")})
    eval_each_epoch: bool = field(default=True, metadata={"help": (
        "evaluate the test problems after every epoch. Paper recipes: false (mathrecipe eval on checkpoints)")})
    save_steps: int | None = field(default=None, metadata={"help": (
        "extra resume points every this many steps within an epoch (a checkpoint is saved every epoch anyway)")})
    save_only_model: bool = field(default=False, metadata={"help": (
        "save weights only (less disk): a resume restarts the optimizer but continues the LR schedule; refused "
        "with DeepSpeed. Paper: false")})
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(default="auto", metadata={"help": (
        "compute precision (weights stay fp32 masters); auto: bf16 on a GPU that has it, fp32 on CPU. Paper: bf16")})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": (
        "recompute activations in the backward pass; null: off on CPU, on a GPU only when mathrecipe plan says "
        "the stage needs it. Paper: true")})
    use_liger_kernel: bool | None = field(default=None, metadata={"help": (
        "Liger's fused kernels; null: on where supported (CUDA, liger-kernel installed, a known model type)")})
    optim: str = field(default="adamw_torch", metadata={"help": (
        "transformers optimizer name. Paper: paged_adamw_8bit")})
    logging_steps: int = field(default=25, metadata={"help": "log every this many steps. Paper: 1"})
    deepspeed: str | None = field(default=None, metadata={"help": (
        "a DeepSpeed JSON config. Paper: recipes/accelerate/deepspeed_zero3.json")})
    fsdp: str | None = field(default=None, metadata={"help": (
        "an FSDP config JSON (full_shard, auto_wrap), e.g. recipes/accelerate/fsdp2.json")})
    extra: dict[str, Any] = field(default_factory=dict, metadata={"help": (
        "other trl.SFTConfig fields, passed as is (one the recipe sets is refused). Paper: lr_scheduler_kwargs "
        "{num_cycles: 0.25}, packing_strategy wrapped, padding_free false, dataset_num_proc 16")})


# ------------------------------------------------------------------------------------------ eval, health


@dataclass
class EvalConfig:
    """The in-run evaluation (after every SFT epoch, before and after GRPO), and the sampling defaults of
    ``mathrecipe eval`` and ``solve``: each key is also their flag (``top_p`` -> ``--top-p``)."""

    samples: int = field(default=4, metadata={"help": (
        "samples per problem; accuracy = mean pass@1 over them. Paper recipes: 8 in-run (a guess; final numbers: "
        "mathrecipe eval --samples 64)")})
    temperature: float = field(default=0.6, metadata={"help": (
        "sampling temperature; 0 = greedy. 0.6 is the R1 convention (the paper recipes and --preset r1 use it)")})
    top_p: float = field(default=1.0, metadata={"help": (
        "nucleus sampling: sample from the smallest set of tokens whose probabilities sum to P (0 < P <= 1; 1 = "
        "off). Paper recipes: 0.95 (the R1 convention, a guess)")})
    min_p: float | None = field(default=None, metadata={"help": (
        "drop tokens less likely than P x the most likely one (0 <= P < 1; null = off)")})
    max_new_tokens: int = field(default=160, metadata={"help": (
        "most new tokens per sample. Paper recipes: 32768 (the paper's largest token budget)")})
    generate_batch_size: int | Literal["auto"] = field(default=400, metadata={"help": (
        "sequences per generate() call (hf backend), or auto: the most whose KV cache fits kv_cache_gib. Paper "
        "recipes: auto")})
    kv_cache_gib: float | None = field(default=None, metadata={"help": (
        "KV-cache memory per device in GiB for generate_batch_size auto (null: a share of the measured free GPU "
        "memory; 4 on CPU)")})
    backend: str = field(default="hf", metadata={"help": (
        "a generation backend (mathrecipe.evaluate.generation.BACKENDS): hf (transformers, any device) or vllm "
        "(GPU). Paper recipes: vllm")})
    stop_at_think: bool = field(default=False, metadata={"help": (
        "stop each sample at </think> and take the boxed answer from the reasoning (the paper's AIMO inference)")})


@dataclass
class HealthConfig:
    """GRPO alarms, listed in report.md; with ``stop: true`` an alarm stops training like the collapse guard. The
    paper recipes keep these defaults."""

    max_truncation: float = field(default=0.2, metadata={"help": (
        "alarm when more than this share of completions is cut at grpo.max_completion_length (0-1)")})
    max_zero_std_groups: float = field(default=0.5, metadata={"help": (
        "alarm when more than this share of prompt groups have all-equal rewards: no learning signal (0-1)")})
    window: int = field(default=10, metadata={"help": "GRPO steps over which the alarms are judged (rolling means)"})
    trend: float = field(default=0.05, metadata={"help": (
        "'format up while accuracy down': both halves of the window differ by more than this (reward units)")})
    max_entropy_growth: float = field(default=3.0, metadata={"help": (
        "alarm when the entropy over the window exceeds this multiple of the first step's")})
    stop: bool = field(default=False, metadata={"help": "an alarm stops GRPO (and keeps the policy before it)"})


# Keys that moved to the table of sources: the old spelling is one line naming the new shape.
_SOURCE_SHAPE = ("data.build.sources: a list of {kind, path, name, split, data_files, sample, sft, grpo}, e.g. "
                 "[{kind: openr1, path: open-r1/OpenR1-Math-220k, sample: {n_long: 3000}}, {kind: light_r1, path: "
                 "qihoo360/Light-R1-SFTData, data_files: stage2-3k.json, grpo: true}]")
MOVED: dict[str, str] = {
    **{f"data.build.{k}": f"data.build.{k} is now a source's entry in {_SOURCE_SHAPE}"
       for k in ("openr1", "openr1_split", "openr1_hard", "openr1_hard_split", "light_r1", "light_r1_file")},
    **{f"data.build.{k}": f"data.build.{k} is now data.build.sources[N].sample.{k}, the sample filter of the source "
       f"it samples; {_SOURCE_SHAPE}"
       for k in ("long_min_tokens", "long_min_accuracy", "n_long", "mid_min_accuracy", "mid_max_accuracy", "n_mid")},
}

# Keys renamed so that each concept has one name (README "Names"): old key -> new key. An old recipe spelling is
# one line naming the new key; a run folder recorded under the old names still resumes (preflight reads it through
# this table).
RENAMED_KEYS: dict[str, str] = {
    "sft.batch_size": "sft.per_device_train_batch_size",
    "grpo.batch_size": "grpo.per_device_train_batch_size",
    "eval.batch_size": "eval.generate_batch_size",
    "data.build.batch_size": "data.build.map_batch_size",
    "data.eval_path": "data.test_path",
    "data.toy.n_rl": "data.toy.n_grpo",
}
# Keys that were renamed or moved: the old spelling is one line naming the new one.
RENAMED: dict[str, str] = {
    **MOVED,
    **{old: f"recipe key '{old}' is now '{new}' (one name per concept); rename it in the recipe or override"
       for old, new in RENAMED_KEYS.items()},
}
