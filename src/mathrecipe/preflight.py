"""Before any compute: every input a run needs (``preflight``), and its output folder -- may it be resumed
(``check_output_dir``), restarted (``check_restart``), or was it moved (``adopt_moved_run``)? Each refusal is one
line naming the key, file or row and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mathrecipe.data.io import load_table, require_columns, require_nonempty, write_jsonl
from mathrecipe.errors import MathRecipeError
from mathrecipe.files import atomic_write_json
from mathrecipe.recipe import MOVED, RENAMED_KEYS, Recipe, RecipeError
from mathrecipe.toy import DONE

# recipe keys that may change between an interrupted run and its resumption without invalidating it: the folder is
# the run (a copy or a move of it is the same run), and `mathrecipe run` never reads data build's table of sources
# (the toy builds from its own task), so a run folder written before the table replaced the flat keys (MOVED) resumes
RESUMABLE_CHANGES = ("report_to", "sft.logging_steps", "grpo.logging_steps", "health.", "verdicts", "output_dir",
                     "data.build.sources", *MOVED)


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


def run_problems(recipe: Recipe, path: str | Path, key: str = "data.test_path") -> list[dict[str, Any]]:
    """The test (or dev) problems of a run through the one problem loader, with the recipe's columns."""
    from mathrecipe.data.problems import load_problems

    return load_problems(path, key, problem_column=recipe.data.problem_column,
                         answer_column=recipe.data.answer_column)


def check_problem_sets(recipe: Recipe, sets: dict[str, str]) -> None:
    """The test and dev problems (``{recipe key: path}``): their columns and fields, then every prompt plus
    ``eval.max_new_tokens`` against the start model's context -- now, not when the in-run evaluation meets them
    after an epoch of training. The same check as the evaluation's (``inrun.problem_prompt_ids``)."""
    from transformers import AutoConfig

    from mathrecipe.evaluate.inrun import problem_prompt_ids
    from mathrecipe.modeling import load_tokenizer, resolve_model
    from mathrecipe.prompts import model_context

    loaded = {key: run_problems(recipe, path, key) for key, path in sets.items()}
    path = resolve_model(recipe.model.name_or_path, "model.name_or_path")
    context = model_context(AutoConfig.from_pretrained(path, trust_remote_code=recipe.model.trust_remote_code))
    tokenizer = load_tokenizer(path, recipe.model)
    for key, problems in loaded.items():
        problem_prompt_ids(tokenizer, problems, recipe.data.system_prompt, recipe.eval.max_new_tokens, context,
                           where=f"{key} {sets[key]}")


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
                                   ("data.test_path", d.test_path, True),
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
        sets = {"data.test_path": d.test_path}
        if do_sft and recipe.sft.select == "best":
            if not d.dev_path:
                raise RecipeError("sft.select=best picks the epoch on development problems apart from the reported "
                                  "ones: set data.dev_path (or sft.select=last)")
            sets["data.dev_path"] = d.dev_path
        check_problem_sets(recipe, sets)
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
            "data.grpo_path": d.grpo_path, "data.test_path": d.test_path, "data.dev_path": d.dev_path,
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

    # a run recorded before a key was renamed holds its old name: the same setting, not another one
    a = {RENAMED_KEYS.get(k, k): v for k, v in flat(old).items()}
    b = flat(settings)
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
