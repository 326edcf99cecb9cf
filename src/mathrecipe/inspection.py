"""``mathrecipe inspect``: what every stage sees for one row, before any training; and (``--keys``) what every
recipe key means.

The SFT text with the trained span (tokens whose label is not -100), the GRPO prompt as TRL tokenises it, the
evaluation prompt, whether the three prompts are token-identical, and the dtypes training will use. It needs only
the tokenizer (no model weights are loaded), so it runs on CPU for any model folder. ``--keys`` reads each recipe
field's doc where it is declared (``field(metadata={"help": ...})``, ``mathrecipe.schema``) and loads nothing.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal

from mathrecipe.errors import MathRecipeError
from mathrecipe.prompts import prompt_ids, sft_tokens, turn_format
from mathrecipe.recipe import Recipe


def trained_labels(input_ids: list[int], completion_mask: list[int]) -> list[int]:
    """Labels as TRL's SFTTrainer builds them from ``completion_mask`` (completion_only_loss): -100 = no loss."""
    return [t if m else -100 for t, m in zip(input_ids, completion_mask)]


def view_row(tokenizer: Any, prompt: list[dict[str, str]], completion: str,
             system_prompt: str | None) -> dict[str, Any]:
    """The inspect record for one SFT row (prompt messages + trace) under ``tokenizer``'s chat template."""
    feats = sft_tokens(tokenizer, prompt, completion, turn_format(tokenizer))
    ids, labels = feats["input_ids"], trained_labels(feats["input_ids"], feats["completion_mask"])
    sft_prompt = [t for t, lab in zip(ids, labels) if lab == -100]
    trained = [t for t in labels if t != -100]
    # GRPO: TRL 1.16 tokenises a conversational prompt with apply_chat_template(tokenize=True, generation prompt)
    grpo = list(tokenizer.apply_chat_template(conversation=[prompt], add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"][0])
    user = next((m["content"] for m in prompt if m.get("role") == "user"), None)
    if user is None:
        raise MathRecipeError("the SFT row's prompt has no user turn")
    ev = prompt_ids(tokenizer, user, system_prompt)
    return {
        "sft": {"text": tokenizer.decode(ids), "trained_text": tokenizer.decode(trained), "n_tokens": len(ids),
                "n_trained": len(trained)},
        "grpo": {"prompt": tokenizer.decode(grpo)},
        "eval": {"prompt": tokenizer.decode(ev)},
        "prompts_identical": sft_prompt == grpo == ev,
        "prompt_ids": {"sft": len(sft_prompt), "grpo": len(grpo), "eval": len(ev)},
    }


def inspect_recipe(recipe: Recipe, row: int = 0) -> dict[str, Any]:
    """The inspect record for SFT row ``row`` of the recipe's data (the toy builds its model folder and data into
    ``output_dir`` first: the same files ``mathrecipe run`` then reuses)."""
    from mathrecipe.modeling import load_tokenizer, train_dtypes
    from mathrecipe.pipeline import prepare_data, prepare_model
    from mathrecipe.sft import load_sft_dataset

    out = Path(recipe.output_dir)
    model_path = prepare_model(recipe, out / "model-init")
    paths = prepare_data(recipe, out / "data", model_path)
    if "sft" not in paths:
        raise MathRecipeError("inspect shows an SFT row: set data.sft_path")
    ds = load_sft_dataset(paths["sft"])
    if not 0 <= row < len(ds):
        raise MathRecipeError(f"--row {row}: the SFT data {paths['sft']} has rows 0..{len(ds) - 1}")
    tokenizer = load_tokenizer(model_path, recipe.model)
    rec = view_row(tokenizer, ds[row]["prompt"], ds[row]["completion"], recipe.data.system_prompt)
    s = recipe.sft
    rec["train_dtype"] = train_dtypes(s.precision, sharded=bool(s.deepspeed or s.fsdp))
    rec["row"], rec["model"] = row, model_path
    return rec


def render_text(rec: dict[str, Any]) -> str:
    """The human view: the SFT text with the trained span between ⟦ and ⟧, then the prompts and dtypes."""
    sft = rec["sft"]
    text, trained = sft["text"], sft["trained_text"]
    cut = text.rfind(trained) if trained else -1
    marked = f"{text[:cut]}⟦{trained}⟧" if cut >= 0 else f"{text}\n[trained span not found verbatim: {trained!r}]"
    same = "yes" if rec["prompts_identical"] else "NO (the stages would see different prompts)"
    d = rec["train_dtype"]
    return "\n".join([
        f"# SFT row {rec['row']} of {rec['model']}: {sft['n_tokens']} tokens, {sft['n_trained']} trained (⟦...⟧)",
        marked, "", "# GRPO prompt", rec["grpo"]["prompt"], "", "# evaluation prompt", rec["eval"]["prompt"], "",
        f"prompts token-identical across SFT, GRPO and evaluation: {same} {rec['prompt_ids']}",
        f"training dtypes: parameters {d['params']}, compute {d['compute']} (mixed precision by "
        f"{d['mixed_precision_by']})",
    ])


def cmd_inspect(recipe: Recipe, row: int, as_json: bool) -> str:
    rec = inspect_recipe(recipe, row)
    if as_json:
        return json.dumps({k: rec[k] for k in ("sft", "grpo", "eval", "prompts_identical", "train_dtype")},
                          indent=2, ensure_ascii=False)
    return render_text(rec)


# ------------------------------------------------------------------------------------------ recipe keys


def _section_class(tp: Any) -> type | None:
    """The dataclass a field's annotation holds (``X``, ``X | None``, ``list[X]``), or None for a plain value."""
    if dataclasses.is_dataclass(tp):
        return tp
    return next((c for a in typing.get_args(tp) if (c := _section_class(a)) is not None), None)


def type_name(tp: Any) -> str:
    """An annotation as a recipe writer reads it: ``int | null``, ``last | best``, ``list[str]``, ``mapping``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(map(str, args))
    if tp is type(None):
        return "null"
    if origin is list:
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict or tp is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def _default_text(f: dataclasses.Field) -> str:
    """A field's default as YAML-ish text (a section's default is its own keys; a list of sections by name)."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if dataclasses.is_dataclass(value):
        return ""  # its keys follow, each with its default
    if value == "":
        return "(required)"
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        return "[" + ", ".join(getattr(v, "name", None) or getattr(v, "kind", "?") for v in value) + "]"
    if isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
        return "{" + ", ".join(value) + "}"  # sections by name (the rewards): their keys follow
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (str, list, dict)) else (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value))


def recipe_keys(cls: type | None = None, prefix: str = "") -> list[dict[str, str]]:
    """Every recipe key: {section, key, type, default, meaning}, a section's own keys in declaration order, then its
    sub-sections' (a field holding ``X``, ``X | None`` or ``list[X]`` of a dataclass X: ``data.build.sources[]``)."""
    from mathrecipe.recipe import Recipe

    cls = cls or Recipe
    hints = typing.get_type_hints(cls)
    rows, subsections = [], []
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f"{prefix}{f.name}"
        rows.append({"section": prefix[:-1] or "(top level)", "key": key, "type": type_name(tp),
                     "default": _default_text(f), "meaning": f.metadata.get("help", "")})
        sub = _section_class(tp)
        if sub is not None:
            subsections.append((sub, f"{key}[]." if typing.get_origin(tp) is list else f"{key}."))
        elif key == "rewards":  # a mapping of reward names: each registered reward's options are its keys
            from mathrecipe.rewards import REWARDS

            subsections += [(spec.options, f"rewards.{name}.") for name, spec in REWARDS.items()]
    for sub, sub_prefix in subsections:
        rows += recipe_keys(sub, sub_prefix)
    return rows


def render_keys(rows: list[dict[str, str]], width: int = 110) -> str:
    """The keys as text: one block per section, each key with its type and default, its meaning indented."""
    out: list[str] = []
    section = None
    for r in rows:
        if r["section"] != section:
            section = r["section"]
            out += ["", f"[{section}]"]
        default = f" = {r['default']}" if r["default"] else ""
        out.append(f"  {r['key']}  ({r['type']}){default}")
        meaning = r["meaning"] or "(not documented yet)"
        out += textwrap.wrap(meaning, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(out).lstrip("\n")


def _under(key: str, prefix: str) -> bool:
    """Whether ``key`` is ``prefix`` or one of its keys (``data.build`` holds ``data.build.sources[].kind``)."""
    p = prefix.rstrip(".")
    return not p or key == p or key.startswith((p + ".", p + "["))


def cmd_keys(prefix: str, as_json: bool) -> str:
    """``mathrecipe inspect --keys [PREFIX]``: the keys at or under ``PREFIX`` (all when empty)."""
    rows = [r for r in recipe_keys() if _under(r["key"], prefix)]
    if not rows:
        raise MathRecipeError(f"--keys {prefix}: no recipe key is or starts with it; `mathrecipe inspect --keys` "
                              "lists them all")
    return json.dumps(rows, indent=2, ensure_ascii=False) if as_json else render_keys(rows)
