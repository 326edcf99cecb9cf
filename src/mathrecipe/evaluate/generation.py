"""Generation: ONE interface, :class:`Generator`, with a transformers backend and a vLLM backend.

``mathrecipe eval``, the in-run evaluation (SFT epochs, after GRPO) and any script use it the same way::

    ids = batch_prompt_ids(tokenizer, [p["problem"] for p in problems], system_prompt)  # chat template (prompts)
    gen = make_generator("hf", model_or_path, tokenizer, batch_size="auto")
    completions = gen.generate(ids, SamplingSettings(samples=4, temperature=0.6, top_p=0.95, max_new_tokens=2048))
    completions[i][j].text, .token_ids, .finished       # problem i, sample j

Prompts are token ids, never text: every backend then sees exactly the ids training saw (vLLM tokenising text adds
a second BOS to DeepSeek-R1-Distill prompts, whose chat template already writes one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mathrecipe import memory
from mathrecipe.errors import MathRecipeError
from mathrecipe.memory import auto_batch_size, default_kv_cache_gib
from mathrecipe.prompts import THINK_END

BatchSize = int | Literal["auto"]
VLLM_GPU_SHARE = 0.9  # vLLM's default gpu_memory_utilization

class SettingError(MathRecipeError):
    """A sampling setting out of range; ``key`` names it (the CLI shows it as its flag)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key} {message}")
        self.key, self.detail = key, message


@dataclass(frozen=True)
class SamplingSettings:
    """How each problem is sampled. ``samples`` completions per prompt; temperature 0 is greedy."""

    samples: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float | None = None
    max_new_tokens: int = 512
    seed: int = 0
    stop_at_think: bool = False  # stop at </think>: the paper's inference trick (the answer is in the reasoning)

    def __post_init__(self) -> None:
        def bad(key: str, ok: bool, want: str, value: Any) -> None:
            if not ok:
                raise SettingError(key, f"must be {want}, got {value}")

        for key in ("samples", "max_new_tokens", "seed"):
            v = getattr(self, key)
            bad(key, isinstance(v, int) and not isinstance(v, bool), "an integer", v)
        bad("samples", self.samples >= 1, ">= 1", self.samples)
        bad("max_new_tokens", self.max_new_tokens >= 1, ">= 1", self.max_new_tokens)
        bad("temperature", self.temperature >= 0, ">= 0 (0 = greedy)", self.temperature)
        bad("top_p", 0 < self.top_p <= 1, "in (0, 1]", self.top_p)
        bad("min_p", self.min_p is None or 0 <= self.min_p < 1, "in [0, 1)", self.min_p)


@dataclass
class Completion:
    text: str
    token_ids: list[int] = field(repr=False)
    finished: bool  # ended by end-of-sequence (or </think> with stop_at_think); False: cut at max_new_tokens

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


class Generator(Protocol):
    """Anything that samples completions for prompts given as token ids.

    ``generate`` returns, for each prompt, ``settings.samples`` completions; ``on_progress(k)`` is called as
    sequences finish (k = how many) so callers can drive a progress bar.
    """

    def generate(self, prompts: Sequence[list[int]], settings: SamplingSettings,
                 on_progress: Callable[[int], None] | None = None) -> list[list[Completion]]: ...


# ------------------------------------------------------------------------------------------ batch size


def check_batch_size(value: Any, key: str = "generate_batch_size") -> BatchSize:
    """An int >= 1 or "auto" (also from text, as the CLI passes it); anything else names ``key``."""
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = None
    if n is None or isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()) or n < 1:
        raise SettingError(key, f"must be an integer >= 1 or 'auto', got {value!r}")
    return n


# --------------------------------------------------------------------------------------- transformers


def _stop_ids(model: Any, tokenizer: Any, stop_at_think: bool) -> tuple[list[int], list[str]]:
    """Token ids that end a completion, and stop strings that span several tokens."""
    ids: list[int] = []
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in eos if isinstance(eos, (list, tuple)) else [eos]:
        if e is not None:
            ids.append(int(e))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    strings: list[str] = []
    if stop_at_think:
        think = tokenizer.encode(THINK_END, add_special_tokens=False)
        if len(think) == 1:
            ids.append(think[0])
        else:
            strings.append(THINK_END)
    if not ids:
        raise MathRecipeError("the model and tokenizer define no end-of-sequence token; "
                              "set generation_config.eos_token_id")
    return ids, strings


def _finish(row: list[int], stop_ids: list[int], stop_strings: list[str], tokenizer: Any) -> Completion:
    """Cut a generated row after its first stop token (kept, as TRL keeps EOS) and decode it."""
    stops = set(stop_ids)
    cut, finished = len(row), False
    for k, t in enumerate(row):
        if t in stops:
            cut, finished = k + 1, True
            break
    ids = row[:cut]
    if not finished:  # drop right padding that follows a multi-token stop string
        while ids and ids[-1] == tokenizer.pad_token_id:
            ids.pop()
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if stop_strings and not finished:
        for s in stop_strings:
            pos = text.find(s)
            if pos >= 0:
                text, finished = text[: pos + len(s)], True
    return Completion(text=text, token_ids=ids, finished=finished)


class FinishedCounter:
    """A stopping criterion that never stops anything: it reports ``on_progress(k)`` as k more sequences of a
    ``generate`` call end on a stop token, so a progress bar moves per finished sequence instead of once per call
    (with the default batch, one call can hold every sequence of a chunk for minutes). ``reported`` counts them;
    the caller reports the rest when the call returns."""

    def __init__(self, stop_ids: Sequence[int], batch: int, on_progress: Callable[[int], None]) -> None:
        self.stop_ids, self.on_progress = list(stop_ids), on_progress
        self.done: Any = None
        self.batch, self.reported = batch, 0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.done is None:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            self.stop = torch.tensor(self.stop_ids, device=input_ids.device)
        # a finished sequence is padded (often with a stop id) from then on: each counts once
        new = torch.isin(input_ids[:, -1], self.stop) & ~self.done
        n = int(new.sum())
        if n:
            self.done |= new
            self.reported += n
            self.on_progress(n)
        return torch.zeros_like(self.done)


class HFGenerator:
    """Batched ``model.generate`` (transformers): left padding, KV cache, ``batch_size`` sequences per call.

    ``batch_size="auto"`` takes the largest batch whose KV cache fits ``kv_cache_gib`` (default:
    :func:`default_kv_cache_gib`). Under DeepSpeed ZeRO-3 / FSDP with several processes, transformers syncs the
    ranks inside each ``generate`` call (synced_gpus); callers must make every rank call it equally often.
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: BatchSize = "auto",
                 kv_cache_gib: float | None = None) -> None:
        if tokenizer.pad_token_id is None:
            raise MathRecipeError("the tokenizer has no pad token; batched generation needs one "
                                  "(set tokenizer.pad_token)")
        if kv_cache_gib is not None and not kv_cache_gib > 0:
            raise SettingError("kv_cache_gib", f"must be > 0, got {kv_cache_gib}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size: BatchSize = check_batch_size(batch_size)
        self.kv_cache_gib = kv_cache_gib

    def batch_size_for(self, prompts: Sequence[list[int]], settings: SamplingSettings) -> int:
        """The batch this generator uses for these prompts: its int batch size, or the auto choice (at most the
        number of sequences asked for)."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        p = next(self.model.parameters())
        gib = self.kv_cache_gib if self.kv_cache_gib is not None else default_kv_cache_gib(p.device)
        longest = max((len(x) for x in prompts), default=0)
        fits = auto_batch_size(self.model.config, p.element_size(), longest + settings.max_new_tokens, gib)
        return max(1, min(fits, len(prompts) * settings.samples))

    @property
    def context(self) -> int | None:
        """The model's context window in tokens (None when its config sets none)."""
        from mathrecipe.prompts import model_context

        return model_context(self.model.config)

    def static_cache_fits(self, batch: int, tokens_per_sequence: int) -> bool:
        """On CPU, generate with a preallocated (static) KV cache when its full size fits the KV-cache memory: the
        default cache grows by torch.cat every token (41 % of the toy's evaluation time; static: 1.64x faster at 160 new
        tokens, the same tokens). On GPU, or when the full cache would not fit, the growing cache stays."""
        p = next(self.model.parameters())
        if p.device.type != "cpu":
            return False
        gib = self.kv_cache_gib if self.kv_cache_gib is not None else default_kv_cache_gib(p.device)
        return memory.static_cache_fits(self.model.config, p.element_size(), batch, tokens_per_sequence, gib)

    def generate(self, prompts: Sequence[list[int]], settings: SamplingSettings,
                 on_progress: Callable[[int], None] | None = None) -> list[list[Completion]]:
        import torch

        model, tok = self.model, self.tokenizer
        stop_ids, stop_strings = _stop_ids(model, tok, settings.stop_at_think)
        jobs = [(i, j) for i in range(len(prompts)) for j in range(settings.samples)]
        jobs.sort(key=lambda ij: len(prompts[ij[0]]))  # similar lengths together: little padding
        batch_size = self.batch_size_for(prompts, settings)
        out: list[list[Completion | None]] = [[None] * settings.samples for _ in prompts]
        gen_kwargs: dict[str, Any] = dict(max_new_tokens=settings.max_new_tokens, eos_token_id=stop_ids,
                                          pad_token_id=tok.pad_token_id, use_cache=True)
        if settings.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
            if settings.min_p:
                gen_kwargs["min_p"] = settings.min_p
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop_strings:
            gen_kwargs.update(stop_strings=stop_strings, tokenizer=tok)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        # a private random stream: evaluating between training epochs must not change training's
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(settings.seed)
            try:
                for start in range(0, len(jobs), batch_size):
                    batch = jobs[start : start + batch_size]
                    width = max(len(prompts[i]) for i, _ in batch)
                    ids = [[tok.pad_token_id] * (width - len(prompts[i])) + list(prompts[i]) for i, _ in batch]
                    mask = [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i, _ in batch]
                    cache = {"cache_implementation": "static"} if self.static_cache_fits(
                        len(batch), width + settings.max_new_tokens) else {}
                    watch = FinishedCounter(stop_ids, len(batch), on_progress) if on_progress else None
                    with torch.no_grad():
                        seqs = model.generate(input_ids=torch.tensor(ids, device=device),
                                              attention_mask=torch.tensor(mask, device=device), **gen_kwargs, **cache,
                                              **({"stopping_criteria": [watch]} if watch else {}))
                    for (i, j), row in zip(batch, seqs[:, width:].tolist()):
                        out[i][j] = _finish(row, stop_ids, stop_strings, tok)
                    if watch is not None and len(batch) > watch.reported:
                        watch.on_progress(len(batch) - watch.reported)  # cut at max_new_tokens, or by a stop string
            finally:
                if was_training:
                    model.train()
        return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- vLLM


class BackendMissing(MathRecipeError, RuntimeError):
    """A backend was asked for whose package is not installed."""


class VLLMGenerator:
    """Generation with vLLM (``pip install 'mathrecipe[vllm]'``, GPU): same settings and outputs as
    :class:`HFGenerator`. Prompts go in as ``TokensPrompt`` token ids, so vLLM adds no special tokens."""

    def __init__(self, model_path: str, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = VLLM_GPU_SHARE, max_model_len: int | None = None, seed: int = 0,
                 **llm_kwargs: Any) -> None:
        require_backend("vllm", "or use the hf backend")
        from vllm import LLM

        self.llm = LLM(model=str(model_path), tensor_parallel_size=tensor_parallel_size, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, **llm_kwargs)

    @property
    def context(self) -> int | None:
        """The engine's context window (max_model_len) in tokens; None when it cannot be read."""
        try:
            return int(self.llm.llm_engine.model_config.max_model_len)
        except (AttributeError, TypeError, ValueError):
            return None

    def generate(self, prompts: Sequence[list[int]], settings: SamplingSettings,
                 on_progress: Callable[[int], None] | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            n=settings.samples,
            temperature=settings.temperature,
            top_p=settings.top_p if settings.temperature > 0 else 1.0,
            min_p=settings.min_p or 0.0,
            max_tokens=settings.max_new_tokens,
            seed=settings.seed,
            stop=[THINK_END] if settings.stop_at_think else None,
            include_stop_str_in_output=True,
        )
        inputs = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        results = self.llm.generate(inputs, params, use_tqdm=False)
        if on_progress:
            on_progress(len(prompts) * settings.samples)
        return [
            [Completion(text=o.text, token_ids=list(o.token_ids), finished=o.finish_reason == "stop")
             for o in r.outputs]
            for r in results
        ]


# ------------------------------------------------------------------------------------------- the registry


def _make_hf(model_or_path: Any, tokenizer: Any, batch_size: BatchSize = "auto", kv_cache_gib: float | None = None,
             seed: int = 0, processes: int = 1, model_config: Any = None, device: Any = None) -> Generator:
    """hf: a loaded model, or a saved folder / hub id loaded here (``modeling.load_for_generation``: the recipe's
    ``model_config``, on ``device``). The seed travels in the sampling settings."""
    from mathrecipe.modeling import load_for_generation

    model = load_for_generation(model_or_path, model_config, device) if isinstance(model_or_path, str) \
        else model_or_path
    return HFGenerator(model, tokenizer, batch_size=batch_size, kv_cache_gib=kv_cache_gib)


def _make_vllm(model_or_path: Any, tokenizer: Any, batch_size: BatchSize = "auto", kv_cache_gib: float | None = None,
               seed: int = 0, processes: int = 1, model_config: Any = None, device: Any = None,
               **llm_kwargs: Any) -> Generator:
    """vllm: an engine per process that loads a saved folder / hub id itself (as TRL's colocated vLLM under a
    multi-process launch: ``external_launcher``). vLLM sizes its own batches: ``batch_size`` and ``kv_cache_gib``
    do not apply."""
    if not isinstance(model_or_path, str):
        raise MathRecipeError("backend 'vllm' loads the model itself: pass a saved folder or hub id, not a model")
    if processes > 1:
        llm_kwargs.setdefault("distributed_executor_backend", "external_launcher")
    return VLLMGenerator(model_or_path, seed=seed, **llm_kwargs)


@dataclass(frozen=True)
class Backend:
    """A generation backend: what it is, whether it can run here, how memory is planned for it, how it is made.

    ``make(model_or_path, tokenizer, batch_size=, kv_cache_gib=, seed=, processes=, model_config=, device=)``
    returns the :class:`Generator`. ``gpu_share`` is the memory model ``mathrecipe plan`` uses: an engine that
    preallocates this share of the GPU (weights, runtime, KV cache: ``memory.engine_kv_room_gib``), or None for one
    whose memory is the weights plus the KV cache of its batch (``eval.generate_batch_size``, ``eval.kv_cache_gib``).
    """

    name: str
    label: str  # how plan's output names it
    summary: str  # for --help
    make: Callable[..., Generator]
    requires: str | None = None  # the module it imports (None: always available)
    needs: str = ""  # what to install when it is missing, for the one-line error
    gpu_share: float | None = None

    def unavailable(self) -> str | None:
        """Why it cannot run here ("needs X, which is not installed: pip install ..."), or None."""
        if self.requires is None:
            return None
        try:
            __import__(self.requires)
        except ImportError:
            return f"needs {self.needs}"
        return None


BACKENDS: dict[str, Backend] = {
    "hf": Backend("hf", "HF generate", "transformers, any device", _make_hf),
    "vllm": Backend("vllm", "vLLM", "GPU", _make_vllm, requires="vllm",
                    needs="vLLM, which is not installed: pip install 'mathrecipe[vllm]' (GPU machines)",
                    gpu_share=VLLM_GPU_SHARE),
}


def check_backend(backend: str, key: str = "backend") -> str:
    """``backend`` when it is a registered name; otherwise a :class:`SettingError` naming ``key`` and the names."""
    if backend not in BACKENDS:
        raise SettingError(key, f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def backend_unavailable(backend: str) -> str | None:
    """Why a registered backend cannot run here (:meth:`Backend.unavailable`); None when it can, or for a name
    that is not a generation backend (GRPO's ``paged`` rollouts)."""
    b = BACKENDS.get(backend)
    return b.unavailable() if b is not None else None


def require_backend(backend: str, fix: str) -> Backend:
    """The registered backend, checked that it can run here; otherwise one line ending in ``fix``."""
    b = BACKENDS[check_backend(backend)]
    why = b.unavailable()
    if why:
        raise BackendMissing(f"backend '{backend}' {why}, {fix}")
    return b


def make_generator(backend: str, model_or_path: Any, tokenizer: Any, batch_size: BatchSize = "auto",
                   kv_cache_gib: float | None = None, seed: int = 0, **kwargs: Any) -> Generator:
    """A :class:`Generator` of a registered backend (:data:`BACKENDS`): ``model_or_path`` is a loaded model or a
    saved folder / hub id (an engine backend takes only the latter); a missing package is a one-line
    :class:`BackendMissing` error, raised before any loading. ``kwargs``: ``processes``, ``model_config``,
    ``device`` and engine settings (see the backends' ``make``)."""
    check_backend(backend)
    return BACKENDS[backend].make(model_or_path, tokenizer, batch_size=batch_size, kv_cache_gib=kv_cache_gib, seed=seed,
                                  **kwargs)


def open_generator(backend: str, model: str, batch_size: BatchSize = "auto", kv_cache_gib: float | None = None,
                   seed: int = 0, tokenizer: Any = None) -> tuple[Any, Generator]:
    """(tokenizer, generator) for a saved folder or hub id, as the ``eval`` and ``solve`` commands load it: a folder
    without weights or tokenizer files, an unknown hub id or architecture, or weights torch refuses to unpickle is
    one line naming ``--model`` (``modeling.loading_errors``). Pass ``tokenizer`` when it is already loaded."""
    from mathrecipe.modeling import load_tokenizer, loading_errors
    from mathrecipe.recipe import ModelConfig

    with loading_errors(model):
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model, ModelConfig())
        return tokenizer, make_generator(backend, model, tokenizer, batch_size=batch_size, kv_cache_gib=kv_cache_gib,
                                         seed=seed)
