"""Memory formulas, in one place: the KV cache and batch sizing of generation, and the training state and
activations that ``mathrecipe plan`` adds up.

Symbols: P parameters, N processes (one per GPU), L layers, h hidden size, I intermediate size, H attention heads,
K key/value heads, d head dimension, V vocabulary, b sequences per micro-batch of s tokens (T = b*s), and a bytes per
activation value (2 for bf16/fp16, 4 for fp32). Sizes in GiB (2**30 bytes).

KV cache: 2 * L * K * d * a bytes per token (keys and values of every layer): 192 KiB per token for a 14B Qwen2.5
shape in bf16, 6.1 GiB for one 33k-token sequence. A generated sequence of t tokens holds t of them; where the memory
must also hold the decode step's last-position fp32 logits and probabilities, a sequence costs V * 8 bytes more.

Batch sizing (``generate_batch_size: auto``): the most sequences of (prompt + max_new_tokens) tokens whose memory fits
M GiB, floor(M / bytes per sequence). At generation M is the KV-cache memory (``kv_cache_gib``; unset:
GPU_KV_CACHE_SHARE of the memory free after loading on a GPU, CPU_KV_CACHE_GIB on a CPU) and the prompts are at hand
(their longest counts), at least 1. Where prompts are not at hand (``mathrecipe plan``, GRPO's rollout cache) a
prompt counts PROMPT_TOKENS tokens. On a CPU a preallocated (static) KV cache is used when its full size fits the KV-cache
memory.

Training state, bytes per parameter (trainable weights are fp32 master weights, compute is bf16):

    layout                      weights  gradients  fp32 master  optimizer moments m
    DeepSpeed (bf16)              2         2           4        Adam 8, 8-bit Adam 2, Lion/SGD-momentum 4
    FSDP2, DDP, one GPU           4         4           -        (same)

  so Adam costs 16 bytes/param either way and 8-bit Adam 10: 14.8B x 16 B = 220 GiB, or 27.5 GiB per GPU sharded
  over 8. ZeRO-1 divides master + moments by N, ZeRO-2 also the gradients, ZeRO-3 and FSDP2 (full shard) all of it.
  On top: DDP keeps gradient buckets (+4 B/param when N > 1); bf16 autocast over fp32 weights keeps bf16 copies for
  backward (+2 B/param); ZeRO-3 holds up to stage3_max_live_parameters gathered bf16 weights; FSDP2 two gathered
  layers plus the LM head.

Activations of one micro-batch:
  - without gradient checkpointing, per token and layer: (a/2) * (34h + 8I + 8Kd) bytes -- Korthikanti et al. 2022's
    34h with flash/SDPA attention (no s^2 term), adapted to RMSNorm with fp32 internals, RoPE and SwiGLU's four
    I-wide tensors; eager attention adds (a/2) * 5 * H * s;
  - with gradient checkpointing: a * h per token and layer (each layer's input) plus one layer's full activations
    while it is recomputed;
  - the fused LM head of TRL 1.16 (no full logits): a 4096 x 32768 fp32 tile plus an fp32 V x h gradient
    accumulator.
  Checked against H200 measurements (Qwen2.5-1.5B shape, one packed 8,192-token row, bf16 autocast, sdpa; see
  bench/results/gpu.md): 28.9 GiB estimated vs 27 measured with checkpointing, 54.2 vs 54 without.

An engine that preallocates a share of the card (vLLM) holds its bf16 weights (2P, over tensor parallelism),
ENGINE_RUNTIME_GIB of runtime and, in the rest, the KV cache: it works only when that rest holds one sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mathrecipe.launch import StageLaunch

GIB = 2**30
PROMPT_TOKENS = 512  # the one prompt allowance where prompts are not at hand: the paper's max prompt length
DECODE_LOGITS_BYTES = 8  # per vocabulary entry: the last position's fp32 logits and probabilities
CPU_KV_CACHE_GIB = 4.0  # KV-cache memory on CPU: fixed (host memory is shared with everything else)
# KV-cache memory on a GPU: this share of the memory free after the model is loaded; the rest covers prefill activations,
# logits and sampling buffers (chosen, not yet measured on a GPU; see the bench notes).
GPU_KV_CACHE_SHARE = 0.6
ENGINE_RUNTIME_GIB = 2.0  # vLLM's activations, sampler and CUDA graphs inside its share (approximate)
LM_HEAD_TILE = 4096 * 32768  # TRL 1.16 fused LM head: TOKEN_CHUNK_SIZE x chunk of the vocabulary, fp32
ZERO3_MAX_LIVE = 1_000_000_000  # DeepSpeed's default stage3_max_live_parameters


# ------------------------------------------------------------------------------------------------ model shape


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that memory depends on (from its config).

    ``counted_params``: the exact parameter count where the model was built from its config on the meta device
    (:mod:`mathrecipe.plan.shapes`); otherwise :attr:`params` counts it from the shape.
    """

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    attention_bias: bool = False  # Qwen2: q/k/v biases
    qk_norm: bool = False  # Qwen3: RMSNorm on queries and keys
    max_positions: int | None = None
    counted_params: int | None = None

    @property
    def layer_params(self) -> int:
        """q, k, v, o projections + gate/up/down MLP + two RMSNorms (+ biases, q/k norms)."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        n = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate + 2 * h
        if self.attention_bias:
            n += q + 2 * kv
        if self.qk_norm:
            n += 2 * self.head_dim
        return n

    @property
    def params(self) -> int:
        """The counted parameters, else: embeddings (+ an untied LM head) + layers + the final norm."""
        if self.counted_params is not None:
            return self.counted_params
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return embed + self.layers * self.layer_params + self.hidden

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """See :func:`kv_bytes_per_token`."""
        return kv_bytes_per_token(self, dtype_bytes)

    def describe(self) -> str:
        tie = "tied" if self.tied else "untied"
        count = f"{self.params / 1e9:.2f}B" if self.params >= 1e9 else f"{self.params / 1e6:.2f}M"
        return (f"{count} parameters ({self.layers} layers, hidden {self.hidden}, "
                f"{self.heads}/{self.kv_heads} heads x {self.head_dim}, MLP {self.intermediate}, vocab {self.vocab} "
                f"{tie})")


# ------------------------------------------------------------------------------------- KV cache and batches


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """KV-cache bytes one token takes: 2 (K and V) x L x K x d x dtype bytes. ``config`` is a :class:`ModelShape`
    or a transformers config (its text config when nested; K defaults to H, d to h / H)."""
    if isinstance(config, ModelShape):
        layers, kv_heads, head_dim = config.layers, config.kv_heads, config.head_dim
    else:
        c = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = c.num_attention_heads
        layers = c.num_hidden_layers
        kv_heads = getattr(c, "num_key_value_heads", None) or heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def sequence_bytes(kv_per_token: int, tokens: int, vocab: int = 0) -> int:
    """Bytes one generated sequence holds: tokens x ``kv_per_token`` of KV cache, plus vocab x DECODE_LOGITS_BYTES
    where the memory must also hold the decode logits (``vocab=0``: the KV cache only)."""
    return tokens * kv_per_token + vocab * DECODE_LOGITS_BYTES


def sequences_that_fit(gib: float, per_sequence: float) -> int:
    """floor(gib x 2^30 / per_sequence): how many sequences gib GiB hold (0 or less: none)."""
    return int(gib * GIB // per_sequence)


def auto_batch_size(config: Any, dtype_bytes: int, tokens_per_sequence: int, kv_cache_gib: float) -> int:
    """``generate_batch_size=auto`` at generation: the most sequences whose KV cache fits the KV-cache memory, at least 1:
    max(1, floor(kv_cache_gib * 2^30 / (kv_bytes_per_token x (prompt + max_new_tokens))))."""
    per = sequence_bytes(kv_bytes_per_token(config, dtype_bytes), tokens_per_sequence)
    return max(1, sequences_that_fit(kv_cache_gib, per))


def static_cache_bytes(config: Any, dtype_bytes: int, batch: int, tokens_per_sequence: int) -> int:
    """Bytes a preallocated KV cache takes: batch x tokens_per_sequence x :func:`kv_bytes_per_token`."""
    return batch * sequence_bytes(kv_bytes_per_token(config, dtype_bytes), tokens_per_sequence)


def static_cache_fits(config: Any, dtype_bytes: int, batch: int, tokens_per_sequence: int,
                      kv_cache_gib: float) -> bool:
    """Whether a preallocated KV cache of ``batch`` sequences fits the KV-cache memory:
    static_cache_bytes <= kv_cache_gib."""
    return static_cache_bytes(config, dtype_bytes, batch, tokens_per_sequence) <= kv_cache_gib * GIB


def default_kv_cache_gib(device: Any) -> float:
    """KV-cache memory (GiB) when none is set: on CUDA, GPU_KV_CACHE_SHARE of the device's free memory; elsewhere a fixed
    CPU_KV_CACHE_GIB."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return GPU_KV_CACHE_SHARE * free / 2**30
    return CPU_KV_CACHE_GIB


def eval_batch_bytes(shape: ModelShape, seq: int, dtype_bytes: int = 2) -> float:
    """Bytes per generated sequence where the limit is all memory left after the weights (``mathrecipe plan``):
    :func:`sequence_bytes` with the decode logits."""
    return sequence_bytes(shape.kv_bytes_per_token(dtype_bytes), seq, shape.vocab)


def auto_eval_batch_size(shape: ModelShape, seq: int, gib: float, dtype_bytes: int = 2) -> int:
    """``eval.generate_batch_size: auto`` as planned: the most sequences of ``seq`` tokens (:func:`eval_batch_bytes`) that
    fit ``gib``; 0 when not one does."""
    return max(0, sequences_that_fit(gib, eval_batch_bytes(shape, seq, dtype_bytes)))


def engine_kv_room_gib(share_gib: float, params: int, tensor_parallel: int = 1) -> float:
    """GiB left for the KV cache in an engine's preallocated share: share - bf16 weights (2P / tensor parallel)
    - ENGINE_RUNTIME_GIB."""
    return share_gib - 2 * params / tensor_parallel / GIB - ENGINE_RUNTIME_GIB


# ------------------------------------------------------------------------------------------ training state


def moment_bytes(optim: str) -> float:
    """Optimizer-state bytes per parameter besides master weights: Adam/AdamW 8 (two fp32 moments), 8-bit Adam 2,
    Lion / SGD with momentum 4 (8-bit Lion 1), Adafactor ~0 (factored), plain SGD 0."""
    o = optim.lower()
    if "lion" in o:
        return 1.0 if "8bit" in o else 4.0
    if "8bit" in o:
        return 2.0
    if "adafactor" in o:
        return 0.0
    if o.startswith("sgd"):
        return 4.0
    return 8.0


def train_state_bytes(params: int, launch: StageLaunch, processes: int, mixed: bool, optim: str) -> dict[str, float]:
    """Per-GPU bytes of weights, gradients, fp32 master weights and optimizer moments (see the module table)."""
    n = max(processes, 1)
    ds = launch.deepspeed is not None
    w = 2 if (ds and mixed) else 4
    g = w
    master = 4 if (ds and mixed) else 0
    m = moment_bytes(optim)
    shards = launch.shards
    div_w = n if shards == "weights" else 1
    div_g = n if shards in ("gradients", "weights") else 1
    div_o = n if shards != "none" else 1
    out = {"weights": params * w / div_w, "gradients": params * g / div_g}
    if master:
        out["fp32 master weights"] = params * master / div_o
    out["optimizer moments"] = params * m / div_o
    return out


def state_extra_bytes(shape: ModelShape, launch: StageLaunch, n: int, mixed: bool) -> dict[str, float]:
    """Per-GPU bytes that come with the parallel layout: DDP buckets, autocast copies, gathered weights."""
    p = shape.params
    out: dict[str, float] = {}
    if launch.deepspeed is None and launch.fsdp is None:
        if mixed:
            out["bf16 autocast weight copies"] = 2 * p
        if n > 1:
            out["DDP gradient buckets"] = 4 * p
    elif launch.zero_stage == 3:
        live = (launch.deepspeed or {}).get("zero_optimization", {}).get("stage3_max_live_parameters", ZERO3_MAX_LIVE)
        live = ZERO3_MAX_LIVE if live == "auto" else int(live)
        out["ZeRO-3 gathered weights"] = 2 * min(p, max(live, shape.vocab * shape.hidden))
    elif launch.fsdp is not None and launch.shards == "weights":
        out["FSDP gathered layers + LM head"] = 2 * 2 * shape.layer_params + 4 * shape.vocab * shape.hidden
    elif launch.fsdp is not None:
        out["FSDP gathered weights (kept through backward)"] = 2 * p
    return out


def layer_activation_bytes(shape: ModelShape, seq: int, act_bytes: int, eager: bool) -> float:
    """Bytes one layer keeps per token for backward: (a/2)(34h + 8I + 8Kd) (+ (a/2) 5 H s for eager attention)."""
    per = 34 * shape.hidden + 8 * shape.intermediate + 8 * shape.kv_heads * shape.head_dim
    if eager:
        per += 5 * shape.heads * seq
    return per * act_bytes / 2


def activation_bytes(shape: ModelShape, batch: int, seq: int, act_bytes: int, checkpointing: bool,
                     eager: bool = False) -> dict[str, float]:
    """Activations of a micro-batch of ``batch`` x ``seq`` tokens (see the module docstring) and the fused LM head."""
    tokens = batch * seq
    layer = tokens * layer_activation_bytes(shape, seq, act_bytes, eager)
    if checkpointing:
        out = {"activations (layer inputs)": tokens * shape.layers * shape.hidden * act_bytes,
               "activations (one layer recomputed)": layer}
    else:
        out = {"activations": layer * shape.layers}
    out["LM head (fused, tiled)"] = LM_HEAD_TILE * 4 + shape.vocab * shape.hidden * 4
    return out
