"""``mathrecipe eval``: benchmarks -> samples.jsonl -> summary.json / summary.md / budget.png, resumable.

The output folder is bound to the settings that made its samples (``eval_config.json``: model, backend, system
prompt, sampling, and per benchmark its data hash and samples per problem). A rerun with the same settings
resumes: finished problems are kept, unfinished ones are generated again; one with other settings is refused in
one line. ``--limit`` is not a setting but a selection: the summary covers exactly the selected problems, and rows
of other problems stay in the file for a later run. The file survives ``kill -9`` at any moment (see ``samples``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mathrecipe.errors import MathRecipeError
from mathrecipe.evaluate.generation import (
    BatchSize,
    HFGenerator,
    SamplingSettings,
    SettingError,
    VLLMMissing,
    check_backend,
    check_batch_size,
    open_generator,
    prompt_ids,
)
from mathrecipe.evaluate.metrics import summarize
from mathrecipe.evaluate.render import plot_budget_curves, summary_markdown
from mathrecipe.evaluate.samples import append_samples, compact, grade_completions, row_key
from mathrecipe.files import atomic_write_text
from mathrecipe.grading import Grader, default_grader
from mathrecipe.prompts import SYSTEM_PROMPT

log = logging.getLogger(__name__)

CONFIG_FORMAT = 2
VLLM_CHUNK_SEQUENCES = 4096  # vLLM schedules a whole chunk itself; bigger chunks keep it busy
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def same_answer(grader: Grader | None = None) -> Any:
    """Answer equivalence for majority voting, by the grader (cached, hang-proof)."""
    g = grader or default_grader()
    return lambda a, b: g.verify_many([a], [b])[0]


def data_hash(problems: Sequence[Mapping[str, Any]]) -> str:
    """Identity of a benchmark's problems: sha256 over (id, problem, answer) of every problem, in order."""
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([str(p["id"]), p["problem"], str(p["answer"])], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def check_model_arg(model: str) -> str:
    """A complete local HF folder (made absolute, so the same model always has the same name) or a reachable hub
    id; anything else is one line, before any loading (a local-looking path never goes to the hub)."""
    from mathrecipe.modeling import resolve_model

    found = resolve_model(model, "--model")
    return str(Path(found).resolve()) if Path(found).exists() else found


def _check_ints(name: str, values: Sequence[int] | None, minimum: int = 1) -> list[int]:
    out = list(values or [])
    for v in out:
        if not isinstance(v, int) or v < minimum:
            raise SettingError(name, f"must be integers >= {minimum}, got {v}")
    return out


def _require_backend(backend: str) -> None:
    check_backend(backend)
    if backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise VLLMMissing("backend 'vllm' needs vLLM, which is not installed: pip install 'mathrecipe[vllm]' "
                              "(GPU machines), or use --backend hf") from None


def _conflicts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Names of settings that differ between an output folder's config and this run's."""
    if old.get("format") != CONFIG_FORMAT:
        return ["format (made by another mathrecipe version)"]
    diff = [k for k in ("model", "backend", "system_prompt") if old.get(k) != new.get(k)]
    diff += [k for k in new["sampling"] if old["sampling"].get(k) != new["sampling"][k]]
    for name, b in new["benchmarks"].items():
        ob = old["benchmarks"].get(name)
        if ob is not None:
            diff += [f"{name} {k}" for k in ("data", "samples") if ob.get(k) != b[k]]
    return diff


def run_eval(
    model: str,
    benchmarks: Sequence[str],
    out_dir: str | Path,
    settings: SamplingSettings,
    samples_by_benchmark: Mapping[str, int] | None = None,
    backend: str = "hf",
    batch_size: BatchSize = "auto",
    kv_cache_gib: float | None = None,
    budgets: Sequence[int] = (),
    ks: Sequence[int] | None = None,
    data_dir: str | Path | None = None,
    system_prompt: str | None = SYSTEM_PROMPT,
    limit: int | None = None,
    problem_column: str | None = None,
    answer_column: str | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on ``benchmarks`` into ``out_dir``; returns {benchmark: summary}.

    ``settings.samples`` is the samples per problem, unless ``samples_by_benchmark`` names the benchmark.
    Every argument is checked (one-line :class:`MathRecipeError`) before any data or model is loaded.
    """
    from tqdm.auto import tqdm

    from mathrecipe.data.benchmarks import load_benchmark

    # ---- checks: nothing is loaded or written before they pass
    model = check_model_arg(str(model))
    _require_backend(backend)
    batch_size = check_batch_size(batch_size)
    if kv_cache_gib is not None and not kv_cache_gib > 0:
        raise SettingError("kv_cache_gib", f"must be > 0, got {kv_cache_gib}")
    budgets = _check_ints("budgets", budgets)
    ks = _check_ints("k", ks)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise SettingError("limit", f"must be an integer >= 1 (the first N problems of each benchmark), got {limit}")
    if not benchmarks:
        raise SettingError("benchmarks", "must name at least one benchmark")
    per_bench = dict(samples_by_benchmark or {})
    for n in per_bench.values():
        dataclasses.replace(settings, samples=n)  # validates n

    loaded: list[tuple[str, list[dict[str, Any]], str]] = []
    for b in benchmarks:
        name, problems = load_benchmark(b, data_dir, problem_column, answer_column)
        if any(name == x for x, _, _ in loaded):
            raise MathRecipeError(f"two benchmarks are named {name!r}; rename one of the files")
        loaded.append((name, problems[:limit] if limit else problems, data_hash(problems)))
    samples_of = {name: per_bench.get(name, settings.samples) for name, _, _ in loaded}

    sampling = {k: v for k, v in dataclasses.asdict(settings).items() if k != "samples"}
    config: dict[str, Any] = {
        "format": CONFIG_FORMAT, "model": model, "backend": backend, "system_prompt": system_prompt,
        "sampling": sampling,
        "benchmarks": {name: {"data": h, "samples": samples_of[name]} for name, _, h in loaded},
    }
    out = Path(out_dir)
    cfg_path, samples_path = out / "eval_config.json", out / "samples.jsonl"
    old = json.loads(cfg_path.read_text()) if cfg_path.is_file() else None
    has_rows = samples_path.is_file() and samples_path.stat().st_size > 0
    if has_rows and old is None:
        raise MathRecipeError(f"{samples_path} exists without eval_config.json, so its settings are unknown; "
                              "use a new --out folder")
    if has_rows and old is not None:  # a config binds only once rows were made with it
        diff = _conflicts(old, config)
        if diff:
            raise MathRecipeError(f"{out} holds samples made with other settings ({', '.join(diff)} differ); "
                                  "use a new --out folder, or the same settings to resume")
        config["benchmarks"] = {**old["benchmarks"], **config["benchmarks"]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_path, json.dumps(config, indent=2) + "\n")  # before any row it describes

    rows = compact(samples_path, {k: v["samples"] for k, v in config["benchmarks"].items()})
    done = {row_key(r) for r in rows}
    todo = [(name, p) for name, probs, _ in loaded for p in probs if (name, str(p["id"])) not in done]

    if todo:
        tokenizer, gen = open_generator(backend, model, batch_size, kv_cache_gib, settings.seed)
        grader = default_grader()
        total = sum(samples_of[name] for name, _ in todo)
        with tqdm(total=total, desc="eval", unit="sample", disable=not progress) as bar:
            for name, _, _ in loaded:
                part_all = [p for b, p in todo if b == name]
                if not part_all:
                    continue
                s = dataclasses.replace(settings, samples=samples_of[name])
                ids = prompt_ids(tokenizer, [p["problem"] for p in part_all], system_prompt)
                per_chunk = (4 * gen.batch_size_for(ids, s) if isinstance(gen, HFGenerator)
                             else VLLM_CHUNK_SEQUENCES)
                chunk = max(1, per_chunk // s.samples)
                for start in range(0, len(part_all), chunk):
                    part = part_all[start : start + chunk]
                    # a seed per chunk, from its first problem: the same work left to do gives the same samples
                    seed = (settings.seed + zlib.crc32(f"{name}/{part[0]['id']}".encode())) % 2**31
                    completions = gen.generate(ids[start : start + chunk], dataclasses.replace(s, seed=seed),
                                               bar.update)
                    append_samples(samples_path, grade_completions(part, completions, tokenizer, grader,
                                                                   benchmarks=[name] * len(part)))
        rows = compact(samples_path, {k: v["samples"] for k, v in config["benchmarks"].items()})

    return write_summary(out, rows, loaded, config, budgets, ks)


def write_summary(out: Path, rows: Sequence[dict[str, Any]], loaded: Sequence[tuple[str, list[dict[str, Any]], str]],
                  config: Mapping[str, Any], budgets: Sequence[int], ks: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Summarise exactly the selected problems of each benchmark; write summary.json/.md (and budget.png)."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault(row_key(r), []).append(r)
    summaries: dict[str, dict[str, Any]] = {}
    same = same_answer()
    for name, probs, _ in loaded:
        n = config["benchmarks"][name]["samples"]
        missing = [p["id"] for p in probs if len(by_key.get((name, str(p["id"])), [])) != n]
        if missing:  # every selected problem was generated above; anything else is a bug, not a number
            raise RuntimeError(f"{name}: {len(missing)} selected problems lack samples (first: {missing[0]!r})")
        sel = [r for p in probs for r in by_key[(name, str(p["id"]))]]
        summaries[name] = summarize(sel, ks=list(ks) or default_ks(n), budgets=budgets, same=same)
    names = [name for name, _, _ in loaded]
    current = {**config, "benchmarks": {k: config["benchmarks"][k] for k in names}}
    atomic_write_text(out / "summary.json", json.dumps(
        {"config": current, "benchmarks": summaries,
         "ids": {name: [p["id"] for p in probs] for name, probs, _ in loaded}}, indent=2) + "\n")
    atomic_write_text(out / "summary.md", summary_markdown(summaries, current))
    if budgets:
        plot_budget_curves({"": {name: [(int(b), a) for b, a in s["budgets"].items()]
                                 for name, s in summaries.items()}}, out / "budget.png")
    return summaries
