"""The one sampling resolver of ``eval``, ``solve`` and the in-run evaluation: flags, then ``--preset``, then the
recipe's ``eval`` section (the built-in recipe's or ``--recipe FILE``'s), whose unset keys are its defaults.

Every field of the recipe's ``EvalConfig`` is a flag of ``eval`` and ``solve`` (``top_p`` -> ``--top-p``), typed by
its annotation and explained by its field doc; every field of ``SamplingSettings`` is filled from the value of the
same name. So a sampling key (say ``repetition_penalty``) is declared once -- an ``EvalConfig`` field (recipe key,
flag, help, preset value) and a ``SamplingSettings`` field (what the backends do with it) -- and nothing here names
it.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mathrecipe.errors import MathRecipeError
from mathrecipe.evaluate.generation import BatchSize, SamplingSettings, SettingError


def flag(key: str) -> str:
    """The command-line flag of an eval key: ``top_p`` -> ``--top-p``."""
    return "--" + key.replace("_", "-")


# Flags renamed so that each concept has one name (README "Names"): old flag -> new flag.
RENAMED_FLAGS = {"--batch-size": "--generate-batch-size"}


class RenamedFlag(argparse.Action):
    """An old flag's spelling: giving it is one line naming the new flag (hidden from --help)."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        self.new = new

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        raise MathRecipeError(f"{option_string} is now {self.new} (one name per concept); use {self.new}"
                              + (f" {values}" if values is not None else ""))


def add_renamed_flags(p: argparse.ArgumentParser, renamed: Mapping[str, str]) -> None:
    """Register each old flag of ``renamed`` (old -> new) as a :class:`RenamedFlag`."""
    for old, new in renamed.items():
        p.add_argument(old, action=RenamedFlag, new=new)


def eval_keys() -> list[str]:
    """The recipe's eval keys, in declaration order: each is also a flag."""
    from mathrecipe.recipe import EvalConfig

    return [f.name for f in dataclasses.fields(EvalConfig)]


def _flag_kwargs(annotation: Any) -> dict[str, Any]:
    """argparse keywords for a field's annotation: bool -> --x/--no-x; a number (or None) -> that type; anything
    with words in it (``int | Literal["auto"]``, a Literal) -> text, checked where the value is used."""
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (
        annotation,)
    kinds = [a for a in args if a is not type(None)]
    if len(kinds) == 1 and kinds[0] in (int, float):
        return {"type": kinds[0]}
    return {}


def add_sampling_args(p: argparse.ArgumentParser, helps: Mapping[str, str] | None = None) -> None:
    """``--recipe``, ``--preset`` and one flag per eval key (help: the field's doc, or ``helps[key]``, where a
    command reads a key its own way). Unset flags stay None, so the preset, then the recipe, fill them."""
    from mathrecipe.evaluate.presets import PRESETS
    from mathrecipe.recipe import EvalConfig

    p.add_argument("--recipe", help="take the sampling defaults, seed and system prompt from this recipe YAML")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    hints = typing.get_type_hints(EvalConfig)
    for f in dataclasses.fields(EvalConfig):
        text = (helps or {}).get(f.name) or f.metadata.get("help", "")
        p.add_argument(flag(f.name), dest=f.name, default=None, help=text.replace("%", "%%"),
                       **_flag_kwargs(hints[f.name]))
    add_renamed_flags(p, RENAMED_FLAGS)


def sampling_settings(values: Mapping[str, Any], seed: int) -> SamplingSettings:
    """``SamplingSettings`` from eval values: each of its fields from the value of the same name (``seed``
    aside). Raises SettingError naming the key of a bad value."""
    names = [f.name for f in dataclasses.fields(SamplingSettings) if f.name != "seed"]
    return SamplingSettings(**{k: values[k] for k in names if k in values}, seed=seed)


def recipe_settings(recipe: Any) -> SamplingSettings:
    """The recipe's eval section as sampling settings (seed: the recipe's): the in-run evaluation's."""
    return sampling_settings(dataclasses.asdict(recipe.eval), recipe.seed)


@dataclass
class Resolved:
    """Sampling for one command: every eval key's value and where it came from, and what is built from them."""

    values: dict[str, Any]
    origin: dict[str, str]  # key -> "--top-p", "preset r1's top_p" or "recipe r.yaml's eval.top_p"
    settings: SamplingSettings
    generate_batch_size: BatchSize
    system_prompt: str | None
    recipe_source: str  # "the built-in recipe" or "recipe FILE"
    samples_by_benchmark: dict[str, int] = field(default_factory=dict)

    def from_recipe(self, key: str) -> bool:
        """Whether ``key``'s value is the recipe's (neither a flag nor the preset set it)."""
        return self.origin[key] == f"{self.recipe_source}'s eval.{key}"


def resolve_sampling(args: argparse.Namespace) -> Resolved:
    """The sampling of ``eval`` / ``solve`` from their parsed arguments (``--recipe``, ``--preset``, the eval-key
    flags, ``--seed``, ``--system-prompt``): checked, each bad value one line naming where it came from."""
    from mathrecipe.evaluate.generation import check_batch_size
    from mathrecipe.evaluate.presets import PRESETS
    from mathrecipe.evaluate.run import require_backend
    from mathrecipe.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    src = f"recipe {args.recipe}" if args.recipe else "the built-in recipe"
    keys = eval_keys()
    values = {k: getattr(recipe.eval, k) for k in keys}
    origin = {k: f"{src}'s eval.{k}" for k in keys}
    per_bench: dict[str, int] = {}
    if args.preset:
        preset = PRESETS[args.preset]
        values.update(preset.values)
        origin.update({k: f"preset {args.preset}'s {k}" for k in preset.values})
        per_bench = dict(preset.samples_by_benchmark)
    for k in keys:
        v = getattr(args, k, None)
        if v is not None:
            values[k], origin[k] = v, flag(k)
            if k == "samples":
                per_bench = {}  # an explicit --samples applies to every benchmark
    seed = args.seed if args.seed is not None else recipe.seed
    system_prompt = args.system_prompt if args.system_prompt is not None else recipe.data.system_prompt
    try:
        settings = sampling_settings(values, seed)
        generate_batch_size = check_batch_size(values["generate_batch_size"])
        if values["kv_cache_gib"] is not None and not values["kv_cache_gib"] > 0:
            raise SettingError("kv_cache_gib", f"must be > 0, got {values['kv_cache_gib']}")
        require_backend(values["backend"])
    except SettingError as e:
        raise MathRecipeError(f"{origin.get(e.key, flag(e.key))} {e.detail}") from None
    return Resolved(values, origin, settings, generate_batch_size, system_prompt or None, src, per_bench)


__all__ = ["RENAMED_FLAGS", "RenamedFlag", "Resolved", "add_renamed_flags", "add_sampling_args", "eval_keys", "flag",
           "recipe_settings", "resolve_sampling",
           "sampling_settings"]
