"""``mathrecipe run``: data -> SFT -> GRPO -> evaluation -> report, each arrow a file on disk; resumable.

output_dir/
  recipe.yaml            the resolved recipe (after overrides); a rerun with other settings is refused
  data/                  sft/, grpo/ (datasets folders), test.jsonl (the test problems), dev.jsonl (epoch selection)
  model-init/            the starting model (toy: built here)
  sft/checkpoint-*/      one HF checkpoint per epoch (complete ones carry mathrecipe_complete.json);
                         epochs.jsonl, eval-epoch*.samples.jsonl, DONE.json when the stage finished
  grpo/final/            the GRPO policy (HF folder); grpo/DONE.json
  eval/                  samples and summaries of the start and final evaluations
  report.json, report.md, report.png

This module orchestrates only. Everything a run needs is checked before any compute (``mathrecipe.preflight``, which
also decides whether the output folder may be resumed); the toy's model and data are built by ``mathrecipe.toy``;
test and dev problems come through the one problem loader (``mathrecipe.data.problems``). A rerun of the same command
resumes: finished stages are skipped, an interrupted stage continues from its last complete checkpoint. Under a
multi-process launch every rank trains and evaluates its share; rank 0 alone writes the shared files, the others
wait at barriers.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from mathrecipe.data.io import write_jsonl
from mathrecipe.errors import MathRecipeError
from mathrecipe.files import atomic_write_json, atomic_write_text
from mathrecipe.hardware import distributed_state
from mathrecipe.preflight import (
    adopt_moved_run,
    check_output_dir,
    check_restart,
    preflight,
    recorded_output_dir,
    run_problems,
)
from mathrecipe.recipe import Recipe
from mathrecipe.report import verdicts, write_report
from mathrecipe.toy import DONE, prepare_toy_data, prepare_toy_model

log = logging.getLogger(__name__)


def prepare_model(recipe: Recipe, out: Path) -> str:
    """The starting model: the recipe's HF folder or hub id, or (``toy``) a tiny Llama built into ``out``."""
    if recipe.model.name_or_path != "toy":
        return recipe.model.name_or_path
    return prepare_toy_model(recipe, out)


def prepare_data(recipe: Recipe, out: Path, tokenizer_path: str | None = None) -> dict[str, Path]:
    """The SFT, GRPO, test and dev sets the stages read: the recipe's paths, or (toy) generated and built into
    ``out`` by the same code as ``mathrecipe data build``, counting trace tokens with ``tokenizer_path``."""
    d = recipe.data
    if d.source == "files":
        return {k: Path(v) for k, v in (("sft", d.sft_path), ("grpo", d.grpo_path), ("test", d.test_path),
                                        ("dev", d.dev_path)) if v}
    if tokenizer_path is None:
        raise ValueError("the toy data step counts trace tokens: pass the toy model's folder as tokenizer_path")
    return prepare_toy_data(recipe, out, tokenizer_path)


START_FILE = "mathrecipe_start.json"  # in OUT/grpo: the model the GRPO stage started from


def model_identity(name: str) -> str:
    """A local model as its absolute path (so ``runs/x/...`` and ``./runs/x/...`` match), a hub id as itself."""
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name


def _start_record(start: str, out: Path) -> dict[str, Any]:
    """How ``START_FILE`` names the start model: relative to the run folder when it lies inside it (so a copied or
    moved run still names its own checkpoint), else its identity."""
    p = Path(start).expanduser()
    if p.exists() and p.resolve().is_relative_to(out.resolve()):
        return {"model": str(p.resolve().relative_to(out.resolve())), "in_run": True}
    return {"model": model_identity(start)}


def bind_grpo_start(out: Path, start: str, state: Any) -> None:
    """One GRPO stage folder, one start model. The first time, record it and drop evaluations of an earlier GRPO
    stage that is gone (``eval/start.*``, ``eval/grpo.*`` would otherwise be reused); later, refuse another."""
    folder, ident = out / "grpo", model_identity(start)
    record = folder / START_FILE
    if record.is_file():
        saved = json.loads(record.read_text())
        old = saved.get("model")
        if saved.get("in_run"):
            old = str((out / old).resolve())
        if old != ident:
            raise MathRecipeError(
                f"{folder} holds GRPO started from {old}, not {ident}; use another output_dir for GRPO from another "
                f"model (or delete {folder} to redo this run's GRPO)")
        return
    if state.is_main_process:
        for name in ("start", "grpo"):
            for suffix in (".summary.json", ".samples.jsonl"):
                (out / "eval" / f"{name}{suffix}").unlink(missing_ok=True)
        atomic_write_json(record, _start_record(start, out))
    state.wait_for_everyone()


# -------------------------------------------------------------------------------------------------- stages


def evaluate_checkpoint(recipe: Recipe, model_path: str, problems: list[dict], out: Path, name: str) -> dict:
    """Evaluate one saved model on the test problems (every rank its share, ``eval.backend``); rank 0 writes
    samples and summary. A summary already on disk (an earlier, interrupted run) is reused."""
    from mathrecipe.evaluate.inrun import evaluate_saved_model
    from mathrecipe.modeling import load_tokenizer

    done = out / f"{name}.summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    rows, summary = evaluate_saved_model(recipe, model_path, load_tokenizer(model_path, recipe.model), problems,
                                         desc=f"eval {name}")
    log.info("eval %s: accuracy %.3f, mean tokens %.1f", name, summary["accuracy"], summary["mean_tokens"])
    state = distributed_state()
    if state.is_main_process:
        write_jsonl(rows, out / f"{name}.samples.jsonl")
        atomic_write_json(done, summary)
    state.wait_for_everyone()
    return summary


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary.get(k) for k in ("accuracy", "mean_tokens", "mean_tokens_correct", "truncation_rate")}


def _stage(name: str, folder: Path, train: Any, report: dict[str, Any], state: Any) -> dict[str, Any]:
    """A stage's report section: read from ``folder/DONE.json`` when it finished earlier (listed in
    ``report["reused"]``), else ``train()`` (which resumes from the stage's last complete checkpoint), recorded as
    DONE by rank 0. ``report["resumed"]`` names the checkpoint a stage resumed from, in this or an earlier run."""
    done = folder / DONE
    if done.is_file():
        section = json.loads(done.read_text())
        report.setdefault("reused", []).append(name)
        log.info("%s: finished in an earlier invocation (%s); reused", name.upper(), done)
    else:
        t = time.time()
        section = train()
        log.info("%s: finished, %d steps in %.0f s", name.upper(), section["steps"], time.time() - t)
        if state.is_main_process:
            atomic_write_json(done, section)
        state.wait_for_everyone()
    if section.get("resumed_from"):
        report["resumed"][name] = section["resumed_from"]
    return section


def wants_verdicts(recipe: Recipe) -> bool:
    """Whether report.md judges the paper's two effects: ``verdicts: true``, or unset (null) on the toy task, the
    only data their thresholds (mathrecipe.report) were set for."""
    return recipe.verdicts if recipe.verdicts is not None else recipe.data.source == "toy"


def _sft_start(sft: dict[str, Any], start: str) -> tuple[str, dict[str, Any] | None]:
    """The start model's name and headline numbers when it is one of the SFT stage's epoch checkpoints."""
    ident = model_identity(start)
    for e in sft.get("epochs", []):
        if e.get("checkpoint") and model_identity(e["checkpoint"]) == ident:
            return f"SFT epoch {e['epoch']}", (_headline(e) if e.get("accuracy") is not None else None)
    return "start model", None


def run(recipe: Recipe, stages: tuple[str, ...] = ("sft", "grpo"), restart: bool = False) -> dict[str, Any]:
    """Run the recipe's enabled stages in order (resuming an interrupted run) and write the report."""
    preflight(recipe, stages)
    state = distributed_state()
    out = Path(recipe.output_dir)
    if restart and out.exists():
        check_restart(recipe, out)  # before anything is deleted
        if state.is_main_process:
            shutil.rmtree(out)
    state.wait_for_everyone()
    moved_from = recorded_output_dir(out)
    settings = check_output_dir(recipe, out, stages)
    if state.is_main_process:
        if moved_from is not None and Path(moved_from) != out:
            adopt_moved_run(out, moved_from)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "recipe.yaml", yaml.safe_dump(settings, sort_keys=False))
    t0 = time.time()
    if state.is_main_process:  # rank 0 builds the model and data; the others wait, then read them
        model_path = prepare_model(recipe, out / "model-init")
        paths = prepare_data(recipe, out / "data", model_path)
    state.wait_for_everyone()
    if not state.is_main_process:
        model_path = prepare_model(recipe, out / "model-init")
        paths = prepare_data(recipe, out / "data", model_path)
    log.info("model %s and data ready in %.1f s", model_path, time.time() - t0)
    problems = run_problems(recipe, paths["test"])
    dev = run_problems(recipe, paths["dev"], "data.dev_path") if "dev" in paths else None
    e = recipe.eval
    report: dict[str, Any] = {
        "eval": {"n_problems": len(problems), "samples": e.samples, "temperature": e.temperature,
                 "max_new_tokens": e.max_new_tokens},
        "processes": state.num_processes,
        "resumed": {},
    }
    timings: dict[str, float] = {"data_and_model": time.time() - t0}
    start = model_path
    start_summary: dict[str, Any] | None = None
    name = "start model"
    if "sft" in stages and recipe.sft.enabled:
        from mathrecipe.sft import run_sft

        t = time.time()
        sft = _stage("sft", out / "sft", lambda: run_sft(recipe, model_path, paths["sft"], problems, out / "sft", dev),
                     report, state)
        report["sft"] = sft
        timings["sft"] = time.time() - t
        start = sft["selected_checkpoint"]
        chosen = next(x for x in sft["epochs"] if x["epoch"] == sft["selected_epoch"])
        if chosen.get("accuracy") is not None:
            start_summary = _headline(chosen)
        name = f"SFT epoch {sft['selected_epoch']}"
    elif (out / "sft" / DONE).is_file():  # `mathrecipe grpo` on a run whose SFT stage finished: keep its section
        report["sft"] = json.loads((out / "sft" / DONE).read_text())
        report.setdefault("reused", []).append("sft")
        if report["sft"].get("resumed_from"):
            report["resumed"]["sft"] = report["sft"]["resumed_from"]
        name, start_summary = _sft_start(report["sft"], start)
    if "grpo" in stages and recipe.grpo.enabled:
        from mathrecipe.grpo import run_grpo

        bind_grpo_start(out, start, state)
        if start_summary is None:
            t = time.time()
            start_summary = _headline(evaluate_checkpoint(recipe, start, problems, out / "eval", "start"))
            timings["eval_start"] = time.time() - t
        t = time.time()
        grpo = _stage("grpo", out / "grpo", lambda: run_grpo(recipe, start, paths["grpo"], out / "grpo", dev), report, state)
        timings["grpo"] = time.time() - t
        t = time.time()
        summary = evaluate_checkpoint(recipe, grpo["checkpoint"], problems, out / "eval", "grpo")
        timings["eval_grpo"] = time.time() - t
        grpo.update(_headline(summary))
        report["grpo"] = grpo
    if start_summary is not None:
        report["start"] = {"name": name, "checkpoint": start, **start_summary}
    timings["total"] = time.time() - t0
    report["timings_s"] = timings
    if not report["resumed"]:
        del report["resumed"]
    if wants_verdicts(recipe):
        report["verdicts"] = verdicts(report)
    if state.is_main_process:
        write_report(report, out)
    state.wait_for_everyone()
    return report


__all__ = ["run", "preflight", "prepare_data", "prepare_model", "evaluate_checkpoint"]
