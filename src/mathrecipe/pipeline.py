"""``mathrecipe run``: data -> SFT -> GRPO -> evaluation -> report, each arrow a file on disk; resumable.

output_dir/
  recipe.yaml            the resolved recipe (after overrides); a rerun with other settings is refused
  data/                  sft/, grpo/ (datasets folders), test.jsonl (held out), dev.jsonl (epoch selection)
  model-init/            the starting model (toy: built here)
  sft/checkpoint-*/      one HF checkpoint per epoch (complete ones carry mathrecipe_complete.json);
                         epochs.jsonl, eval-epoch*.samples.jsonl, DONE.json when the stage finished
  grpo/final/            the GRPO policy (HF folder); grpo/DONE.json
  eval/                  samples and summaries of the start and final evaluations
  report.json, report.md, report.png

Everything a run needs is checked before any compute (``preflight``). A rerun of the same command resumes: finished
stages are skipped, an interrupted stage continues from its last complete checkpoint. Under a multi-process launch
every rank trains and evaluates its share; rank 0 alone writes the shared files, the others wait at barriers.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from mathrecipe.data.io import DataError, load_table, require_columns, require_nonempty, write_jsonl
from mathrecipe.errors import MathRecipeError
from mathrecipe.files import atomic_write_json, atomic_write_text, replace_dir
from mathrecipe.hardware import distributed_state
from mathrecipe.recipe import Recipe, RecipeError
from mathrecipe.report import verdicts, write_report

log = logging.getLogger(__name__)
DONE = "DONE.json"
# recipe keys that may change between an interrupted run and its resumption without invalidating it
RESUMABLE_CHANGES = ("report_to", "sft.logging_steps", "grpo.logging_steps", "health.", "verdicts",
                     "output_dir")  # the folder is the run: a copy or a move of it is the same run


# --------------------------------------------------------------------------------------------- data, model


def toy_splits(recipe: Recipe) -> tuple[Any, list[dict[str, str]]]:
    """The recipe's toy task (seeded, so the model's tokenizer and the data step see the same splits), and its dev
    problems: the last ``n_dev`` RL problems, set apart (disjoint from SFT, RL and the held-out test problems)."""
    from mathrecipe.toy import make_toy_data

    t = recipe.data.toy
    splits = make_toy_data(t.n_sft, t.n_test, t.n_rl + t.n_dev, t.verbose_fraction, t.max_verify_blocks,
                           seed=recipe.seed)
    dev = splits.rl[t.n_rl:]
    splits.rl = splits.rl[: t.n_rl]
    return splits, dev


def prepare_data(recipe: Recipe, out: Path, tokenizer_path: str | None = None) -> dict[str, Path]:
    """The SFT, GRPO, held-out and dev sets the stages read (files: the recipe's paths; toy: generated, then built by
    the same code as ``mathrecipe data build``: normalise, shortest correct trace, dedup, decontaminate, report).
    The toy build goes to a temporary folder renamed into place, so a kill never leaves half a data folder."""
    d = recipe.data
    if d.source == "files":
        return {k: Path(v) for k, v in (("sft", d.sft_path), ("grpo", d.grpo_path), ("test", d.eval_path),
                                        ("dev", d.dev_path)) if v}
    paths = {"sft": out / "sft", "grpo": out / "grpo", "test": out / "test.jsonl", "dev": out / "dev.jsonl"}
    if (out / DONE).is_file():
        return paths
    import datasets

    from mathrecipe.data.build import BuildReport, build_sets, register, write_outputs
    from mathrecipe.data.sources import normalise_openr1, normalise_problems
    from mathrecipe.modeling import load_tokenizer

    if tokenizer_path is None:
        raise ValueError("the toy data step counts trace tokens: pass the toy model's folder as tokenizer_path")
    splits, dev_rows = toy_splits(recipe)
    test = [{"id": f"toy-{i}", **r} for i, r in enumerate(splits.test)]
    dev = [{"id": f"toy-dev-{i}", **r} for i, r in enumerate(dev_rows)]
    # the toy teacher traces in OpenR1-Math's schema: one generation each, verified correct
    raw = datasets.Dataset.from_list([{"problem": r["problem"], "answer": r["answer"], "generations": [r["response"]],
                                       "correctness_math_verify": [True]} for r in splits.sft])
    report = BuildReport()
    sft_src = register(report, "toy", normalise_openr1(raw, "toy"))
    rl = normalise_problems(datasets.Dataset.from_list(splits.rl), "toy-rl")
    sft, grpo = build_sets([("toy", sft_src)], ("toy-rl", rl), {"toy-test": test, "toy-dev": dev},
                           load_tokenizer(tokenizer_path, recipe.model), d.build, d.system_prompt, report)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_outputs(tmp, sft, grpo, report, {"benchmarks": ["toy-test", "toy-dev"], "ngram": d.build.ngram},
                  sft_max_length=recipe.sft.max_length)
    write_jsonl(test, tmp / "test.jsonl")
    write_jsonl(dev, tmp / "dev.jsonl")
    atomic_write_json(tmp / DONE, {"rows": {"test": len(test), "dev": len(dev)}})
    replace_dir(tmp, out)
    return paths


def prepare_model(recipe: Recipe, out: Path) -> str:
    """The starting model: an HF folder or hub id, or (``toy``) a tiny Llama built from the toy task."""
    m = recipe.model
    if m.name_or_path != "toy":
        return m.name_or_path
    if (out / DONE).is_file():
        return str(out)
    from mathrecipe.toy import build_toy_model_folder

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_toy_model_folder(tmp, toy_splits(recipe)[0], vocab_size=m.toy.vocab_size, seed=recipe.seed,
                           system_prompt=recipe.data.system_prompt, hidden_size=m.toy.hidden_size,
                           num_layers=m.toy.num_layers, num_heads=m.toy.num_heads,
                           intermediate_size=m.toy.intermediate_size)
    atomic_write_json(tmp / DONE, {"model": "toy"})
    replace_dir(tmp, out)
    return str(out)


def load_problems(path: str | Path, problem_column: str = "problem", answer_column: str = "answer",
                  what: str = "evaluation data") -> list[dict]:
    """Held-out problems as dicts with id, problem, answer; missing or empty fields are errors naming the row."""
    ds = load_table(path, what=what)
    source = f"evaluation data {path}"
    require_columns(ds, [problem_column, answer_column], source)
    require_nonempty(ds, [problem_column, answer_column], source)
    ids = ds["id"] if "id" in ds.column_names else list(range(len(ds)))
    return [{"id": i, "problem": p, "answer": str(a)}
            for i, p, a in zip(ids, ds[problem_column], ds[answer_column])]


# --------------------------------------------------------------------------------------------- preflight


def _check_sft_rows(path: str) -> None:
    ds = load_table(path, what="data.sft_path")
    source = f"SFT data {path}"
    if "prompt" in ds.column_names and "completion" in ds.column_names:
        require_nonempty(ds, ["prompt", "completion"], source)
    else:
        require_columns(ds, ["messages"], source)
        require_nonempty(ds, ["messages"], source)


def _require_path(value: str | None, key: str) -> None:
    """A data path: an existing file/folder, or a hub id (checked reachable); a missing local-looking path fails at
    once, naming the key (it is never sent to the hub)."""
    if value:
        from mathrecipe.hub import resolve

        resolve(value, key, "Give a local .jsonl/.parquet file or a saved dataset folder.")


def preflight(recipe: Recipe, stages: tuple[str, ...]) -> None:
    """Check every input the whole run will need, before any compute, cheapest first: paths, the model folder's
    files, then columns and non-empty fields of every data file, optional backends, trainer settings. One line."""
    from mathrecipe.data.io import check_system_prompt
    from mathrecipe.modeling import resolve_model

    do_sft = "sft" in stages and recipe.sft.enabled
    do_grpo = "grpo" in stages and recipe.grpo.enabled
    d = recipe.data
    if d.source == "files":
        for key, value, needed in (("data.sft_path", d.sft_path, do_sft), ("data.grpo_path", d.grpo_path, do_grpo),
                                   ("data.eval_path", d.eval_path, True),
                                   ("data.dev_path", d.dev_path, do_sft and recipe.sft.select == "best")):
            if needed:
                _require_path(value, key)
    if recipe.model.name_or_path != "toy":
        resolve_model(recipe.model.name_or_path, "model.name_or_path")
    if d.source == "files":
        if do_sft:
            _check_sft_rows(d.sft_path)
            check_system_prompt(d.sft_path, d.system_prompt, "SFT data (data.sft_path)")
        if do_grpo:  # columns, fields, system prompt, and each prompt's length against the model's context
            from mathrecipe.grpo import check_grpo_data

            check_grpo_data(recipe, d.grpo_path, recipe.model.name_or_path)
        load_problems(d.eval_path, d.problem_column, d.answer_column, "data.eval_path")
        if do_sft and recipe.sft.select == "best":
            if not d.dev_path:
                raise RecipeError("sft.select=best picks the epoch on development problems apart from the reported "
                                  "ones: set data.dev_path (or sft.select=last)")
            load_problems(d.dev_path, d.problem_column, d.answer_column, "data.dev_path")
    from mathrecipe.evaluate.generation import backend_unavailable

    for key, backend, used in (("eval.backend", recipe.eval.backend, True),
                               ("grpo.backend", recipe.grpo.backend, do_grpo)):
        why = backend_unavailable(backend) if used else None
        if why:
            raise RecipeError(f"{key}={backend} {why}, or set {key}=hf")
    from mathrecipe.hardware import precision_kwargs

    for key, stage in (("sft", recipe.sft), ("grpo", recipe.grpo)):
        try:
            precision_kwargs(stage.precision, stage.gradient_checkpointing)
        except MathRecipeError as e:
            raise RecipeError(f"{key}.precision: {e}") from e
    if do_grpo:
        from mathrecipe.grpo import check_backend_precision

        check_backend_precision(recipe)
    from mathrecipe.launch import validate_launch
    from mathrecipe.plan import check_fits

    validate_launch(recipe)  # the DeepSpeed/FSDP/accelerate files the recipe names, and the process count
    failures = check_fits(recipe).failures()  # on a GPU: each stage's memory against the devices (no-op on CPU)
    if failures:
        raise RecipeError("; ".join(failures))


def _inside(path: str | None, folder: Path) -> bool:
    """True when ``path`` names an existing file or folder at or under ``folder`` (a hub id never does)."""
    if not path or not Path(path).expanduser().exists():
        return False
    return Path(path).expanduser().resolve().is_relative_to(folder.resolve())


def input_paths(recipe: Recipe) -> dict[str, str | None]:
    """Every file or folder a run reads, by recipe key: the model, the data files and the launch configs."""
    d, s, g = recipe.data, recipe.sft, recipe.grpo
    return {"model.name_or_path": recipe.model.name_or_path, "data.sft_path": d.sft_path,
            "data.grpo_path": d.grpo_path, "data.eval_path": d.eval_path, "data.dev_path": d.dev_path,
            "sft.deepspeed": s.deepspeed, "sft.fsdp": s.fsdp, "grpo.deepspeed": g.deepspeed, "grpo.fsdp": g.fsdp,
            "accelerate_config": recipe.accelerate_config}


def check_restart(recipe: Recipe, out: Path) -> None:
    """Refuse ``--restart`` when it would delete one of the run's own inputs (e.g. GRPO from this run's
    ``sft/checkpoint-N``): the run would then load a path that no longer exists."""
    inside = [f"{k}={v}" for k, v in input_paths(recipe).items() if _inside(v, out)]
    if inside:
        raise MathRecipeError(
            f"--restart would delete {out}, which holds this run's input {inside[0]}"
            f"{f' (and {len(inside) - 1} more)' if len(inside) > 1 else ''}; copy it outside {out} and point the "
            "recipe there, or use another output_dir")


def _own_checkpoint(recipe: Recipe, out: Path, stages: tuple[str, ...]) -> bool:
    """``mathrecipe grpo RECIPE model.name_or_path=OUT/sft/checkpoint-N`` (the stage-by-stage path): the model is
    a folder inside this run's output_dir and this command trains no SFT, so it continues the run."""
    return not ("sft" in stages and recipe.sft.enabled) and _inside(recipe.model.name_or_path, out)


def check_output_dir(recipe: Recipe, out: Path, stages: tuple[str, ...] = ("sft", "grpo")) -> dict[str, Any]:
    """Refuse to resume a run made with other settings (one line listing the keys); return the settings to record
    in ``recipe.yaml``. GRPO from one of the run's own checkpoints is no conflict: the run keeps its recorded
    ``model.name_or_path`` (the model SFT started from) and the GRPO stage records its own start."""
    settings = recipe.to_dict()
    saved = out / "recipe.yaml"
    if not saved.is_file():
        return settings
    try:
        old = yaml.safe_load(saved.read_text()) or {}
    except yaml.YAMLError:
        return settings  # unreadable: it is rewritten

    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(tree, dict):
            return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()}
        return {prefix[:-1]: tree}

    a, b = flat(old), flat(settings)
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES)]
    if "model.name_or_path" in diff and _own_checkpoint(recipe, out, stages):
        diff.remove("model.name_or_path")
        settings["model"]["name_or_path"] = a.get("model.name_or_path")
    if diff:
        hint = (" (GRPO from this run's own SFT checkpoint: `mathrecipe grpo RECIPE model.name_or_path=...`)"
                if diff == ["model.name_or_path"] and _inside(recipe.model.name_or_path, out) else "")
        raise MathRecipeError(
            f"{out} holds a run made with other settings ({', '.join(diff[:6])}{' ...' if len(diff) > 6 else ''} "
            f"differ); rerun with the same settings to resume it{hint}, add --restart to start over, or use another "
            "output_dir")
    return settings


def recorded_output_dir(out: Path) -> str | None:
    """The ``output_dir`` a run folder was made under (its ``recipe.yaml``), or None for a new or unreadable one."""
    try:
        old = yaml.safe_load((out / "recipe.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    value = old.get("output_dir") if isinstance(old, dict) else None
    return value if isinstance(value, str) else None


def rebase_paths(value: Any, old: str, new: Path) -> Any:
    """``value`` (a record: dicts, lists, strings) with every path at or under ``old`` moved under ``new``,
    compared by path components (``runs/x`` holds ``runs/x/sft``, not ``runs/x2``)."""
    if isinstance(value, dict):
        return {k: rebase_paths(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [rebase_paths(v, old, new) for v in value]
    if isinstance(value, str) and value:
        parts, root = Path(value).parts, Path(old).parts
        if root and parts[: len(root)] == root:
            return str(new.joinpath(*parts[len(root):]))
    return value


def adopt_moved_run(out: Path, old: str) -> None:
    """A run folder copied or moved from ``old`` to ``out`` continues where it stopped: the checkpoint paths its
    stage records (``sft/DONE.json``, ``sft/epochs.jsonl``, ``grpo/DONE.json``) name the copy, never the original
    (which may be gone, or hold another run by now). Rewritten atomically, before ``recipe.yaml`` forgets ``old``."""
    from mathrecipe.sft import EPOCHS_FILE

    for f in (out / "sft" / DONE, out / "grpo" / DONE):
        if f.is_file():
            atomic_write_json(f, rebase_paths(json.loads(f.read_text()), old, out))
    epochs = out / "sft" / EPOCHS_FILE
    if epochs.is_file():
        from mathrecipe.files import read_jsonl_rows

        write_jsonl(rebase_paths(list(read_jsonl_rows(epochs)), old, out), epochs)


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
    """Evaluate one saved model on the held-out problems (every rank its share, ``eval.backend``); rank 0 writes
    samples and summary. A summary already on disk (an earlier, interrupted run) is reused."""
    from mathrecipe.evaluate.inrun import evaluate_saved_model
    from mathrecipe.modeling import load_tokenizer

    done = out / f"{name}.summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    rows, summary = evaluate_saved_model(recipe, model_path, load_tokenizer(model_path, recipe.model), problems,
                                         desc=f"eval {name}")
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
    else:
        section = train()
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
    problems = load_problems(paths["test"], recipe.data.problem_column, recipe.data.answer_column)
    dev = load_problems(paths["dev"], recipe.data.problem_column, recipe.data.answer_column) if "dev" in paths else None
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
        grpo = _stage("grpo", out / "grpo", lambda: run_grpo(recipe, start, paths["grpo"], out / "grpo"), report, state)
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


__all__ = ["run", "preflight", "prepare_data", "prepare_model", "load_problems", "evaluate_checkpoint", "DataError"]
