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
    check_batch_size,
    open_generator,
)
from mathrecipe.evaluate.generation import (
    require_backend as _require_installed,
)
from mathrecipe.evaluate.identity import fingerprint_changes, model_fingerprint
from mathrecipe.evaluate.metrics import accuracy_at_budgets, budget_grid, summarize
from mathrecipe.evaluate.render import plot_budget_curves, summary_markdown
from mathrecipe.evaluate.samples import (
    append_samples,
    compact,
    complete_rows,
    grade_completions,
    read_samples,
    row_key,
)
from mathrecipe.files import atomic_write_text
from mathrecipe.grading import Grader, default_grader
from mathrecipe.modeling import open_tokenizer
from mathrecipe.prompts import SYSTEM_PROMPT, checked_prompt_ids

log = logging.getLogger(__name__)

CONFIG_FORMAT = 3  # 3: the model's files are part of its identity (model_files)
BUDGET_POINTS = 40  # budget.png's grid when no --budgets are asked for
VLLM_CHUNK_SEQUENCES = 4096  # vLLM schedules a whole chunk itself; bigger chunks keep it busy


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


def is_toy_tokenizer(tokenizer: Any) -> bool:
    """Whether a tokenizer is one the toy recipe built (its chat template is the toy's)."""
    from mathrecipe.toy import CHAT_TEMPLATE

    return getattr(tokenizer, "chat_template", None) == CHAT_TEMPLATE


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


def require_backend(backend: str) -> None:
    """A known generation backend whose packages are installed, or one line naming the fix."""
    _require_installed(backend, "or use --backend hf")


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
    generate_batch_size: BatchSize = "auto",
    kv_cache_gib: float | None = None,
    budgets: Sequence[int] = (),
    ks: Sequence[int] | None = None,
    data_dir: str | Path | None = None,
    system_prompt: str | None = SYSTEM_PROMPT,
    limit: int | None = None,
    problem_column: str | None = None,
    answer_column: str | None = None,
    progress: bool = True,
    toy_length: bool = False,
) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on ``benchmarks`` into ``out_dir``; returns {benchmark: summary}.

    ``settings.samples`` is the samples per problem, unless ``samples_by_benchmark`` names the benchmark.
    Every argument, the data, the output folder, the model's identity and every prompt's length are checked
    (one-line :class:`MathRecipeError`) before the model is loaded and before anything is written.
    ``toy_length``: ``settings.max_new_tokens`` is the built-in toy recipe's, not chosen for this model (warned
    about when the model is not a toy one).
    """
    from tqdm.auto import tqdm

    from mathrecipe.data.benchmarks import load_benchmark

    # ---- checks: nothing is loaded or written before they pass
    model = check_model_arg(str(model))
    require_backend(backend)
    generate_batch_size = check_batch_size(generate_batch_size)
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
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SettingError("out", f"{out} is a file; give a folder (it is created if missing)")

    loaded: list[tuple[str, list[dict[str, Any]], str]] = []
    for b in benchmarks:
        name, problems = load_benchmark(b, data_dir, problem_column, answer_column)
        if not problems:
            raise MathRecipeError(f"benchmark {b!r}: no problems in it (an empty file?)")
        if any(name == x for x, _, _ in loaded):
            raise MathRecipeError(f"two benchmarks are named {name!r}; rename one of the files")
        loaded.append((name, problems[:limit] if limit else problems, data_hash(problems)))
    samples_of = {name: per_bench.get(name, settings.samples) for name, _, _ in loaded}
    ks = check_ks(ks, samples_of)

    sampling = {k: v for k, v in dataclasses.asdict(settings).items() if k != "samples"}
    config: dict[str, Any] = {
        "format": CONFIG_FORMAT, "model": model, "model_files": model_fingerprint(model), "backend": backend,
        "system_prompt": system_prompt, "sampling": sampling,
        "benchmarks": {name: {"data": h, "samples": samples_of[name]} for name, _, h in loaded},
    }
    cfg_path, samples_path = out / "eval_config.json", out / "samples.jsonl"
    old = json.loads(cfg_path.read_text()) if cfg_path.is_file() else None
    has_rows = samples_path.is_file() and samples_path.stat().st_size > 0
    if has_rows and old is None:
        raise MathRecipeError(f"{samples_path} exists without eval_config.json, so its settings are unknown; "
                              "use a new --out folder")
    if has_rows and old is not None:  # a config binds only once rows were made with it
        changed = fingerprint_changes(old.get("model_files"), config["model_files"])
        if changed and old.get("model") == model:
            raise MathRecipeError(
                f"{out} holds samples of another model at --model {model}: its files changed since they were made "
                f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}); use a new --out folder for this "
                "model")
        diff = _conflicts(old, config)
        if diff:
            raise MathRecipeError(f"{out} holds samples made with other settings ({', '.join(diff)} differ); "
                                  "use a new --out folder, or the same settings to resume")
        config["benchmarks"] = {**old["benchmarks"], **config["benchmarks"]}

    bench_samples = {k: v["samples"] for k, v in config["benchmarks"].items()}
    done = {row_key(r) for r in complete_rows(read_samples(samples_path).rows, bench_samples)[0]}
    todo = {name: [p for p in probs if (name, str(p["id"])) not in done] for name, probs, _ in loaded}
    todo = {name: part for name, part in todo.items() if part}

    if todo:
        tokenizer, context = open_tokenizer(model)
        if toy_length and not is_toy_tokenizer(tokenizer):
            log.warning("max new tokens is the built-in toy recipe's %d, which cuts a real model's answers short "
                        "(GSM8K takes 128-216 tokens greedy, reasoning models thousands): pass --preset r1 or "
                        "--max-new-tokens N", settings.max_new_tokens)
        position = {(name, str(p["id"])): i for name, probs, _ in loaded for i, p in enumerate(probs, 1)}
        ids = {name: checked_prompt_ids(
            tokenizer, [str(p["problem"]) for p in part],
            [f"{position[(name, str(p['id']))]} (id {p['id']})" for p in part], system_prompt,
            settings.max_new_tokens, context, where=f"benchmark {name}",
            fix="remove or shorten those problems, or lower --max-new-tokens if the prompt alone fits (skipping them "
                "would report a number over fewer problems than the benchmark has)") for name, part in todo.items()}
        tokenizer, gen = open_generator(backend, model, generate_batch_size, kv_cache_gib, settings.seed,
                                        tokenizer=tokenizer)
        config["model_files"] = model_fingerprint(model)  # a hub model is in the cache now
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg_path, json.dumps(config, indent=2) + "\n")  # before any row it describes
        compact(samples_path, bench_samples)
        grader = default_grader()
        total = sum(samples_of[name] * len(part) for name, part in todo.items())
        with tqdm(total=total, desc="eval", unit="sample", disable=not progress) as bar:
            for name, part_all in todo.items():
                s = dataclasses.replace(settings, samples=samples_of[name])
                per_chunk = (4 * gen.batch_size_for(ids[name], s) if isinstance(gen, HFGenerator)
                             else VLLM_CHUNK_SEQUENCES)
                chunk = max(1, per_chunk // s.samples)
                for start in range(0, len(part_all), chunk):
                    part = part_all[start : start + chunk]
                    # a seed per chunk, from its first problem: the same work left to do gives the same samples
                    seed = (settings.seed + zlib.crc32(f"{name}/{part[0]['id']}".encode())) % 2**31
                    completions = gen.generate(ids[name][start : start + chunk], dataclasses.replace(s, seed=seed),
                                               bar.update)
                    append_samples(samples_path, grade_completions(part, completions, tokenizer, grader,
                                                                   benchmarks=[name] * len(part)))
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg_path, json.dumps(config, indent=2) + "\n")
    rows = compact(samples_path, bench_samples)
    return write_summary(out, rows, loaded, config, budgets, ks)


def check_ks(ks: Sequence[int], samples_of: Mapping[str, int]) -> list[int]:
    """pass@k and maj@k need k <= n samples per problem. A k above every benchmark's n would print only dashes:
    refused, naming the flag. A k above some benchmarks' n (a preset samples 64 on AIME, 4 on MATH-500) is
    computed where it can be and shown as a dash elsewhere, said in one log line."""
    most = max(samples_of.values())
    over_all = [k for k in ks if k > most]
    if over_all:
        raise SettingError("k", f"{over_all[0]} exceeds the samples per problem ({most}): pass@k and maj@k need "
                           f"k <= samples; use --k up to {most}, or --samples {over_all[0]}")
    partial = {name: [k for k in ks if k > n] for name, n in samples_of.items()}
    partial = {name: over for name, over in partial.items() if over}
    if partial:
        log.warning("--k %s: above the samples per problem of %s; those cells are shown as '-'",
                    ",".join(map(str, sorted({k for over in partial.values() for k in over}))),
                    ", ".join(f"{name} ({samples_of[name]})" for name in partial))
    return list(ks)


def write_summary(out: Path, rows: Sequence[dict[str, Any]], loaded: Sequence[tuple[str, list[dict[str, Any]], str]],
                  config: Mapping[str, Any], budgets: Sequence[int], ks: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Summarise exactly the selected problems of each benchmark; write summary.json/.md and budget.png (accuracy
    at ``budgets``, or, when none are asked for, on a grid of BUDGET_POINTS budgets up to the longest sample)."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault(row_key(r), []).append(r)
    summaries: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    same = same_answer()
    for name, probs, _ in loaded:
        n = config["benchmarks"][name]["samples"]
        missing = [p["id"] for p in probs if len(by_key.get((name, str(p["id"])), [])) != n]
        if missing:  # every selected problem was generated above; anything else is a bug, not a number
            raise RuntimeError(f"{name}: {len(missing)} selected problems lack samples (first: {missing[0]!r})")
        sel = [r for p in probs for r in by_key[(name, str(p["id"]))]]
        summaries[name] = summarize(sel, ks=list(ks) or default_ks(n), budgets=budgets, same=same)
        grid = budgets or budget_grid(max(r["tokens"] for r in sel), BUDGET_POINTS)
        curves[name] = [(int(b), a) for b, a in accuracy_at_budgets(sel, grid).items()]
    names = [name for name, _, _ in loaded]
    current = {**config, "benchmarks": {k: config["benchmarks"][k] for k in names}}
    atomic_write_text(out / "summary.json", json.dumps(
        {"config": current, "benchmarks": summaries,
         "ids": {name: [p["id"] for p in probs] for name, probs, _ in loaded}}, indent=2) + "\n")
    atomic_write_text(out / "summary.md", summary_markdown(summaries, current))
    plot_budget_curves({"": curves}, out / "budget.png")
    return summaries
