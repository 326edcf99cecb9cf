"""The ``mathrecipe`` command. Thin: parse arguments, load the recipe, call a stage."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from mathrecipe import __version__

RECIPE_HELP = "recipe YAML (default: the toy recipe, built in); then key=value overrides, e.g. sft.epochs=3"


def _recipe_args(p: argparse.ArgumentParser, restart: bool = False) -> None:
    p.add_argument("recipe", nargs="?", help=RECIPE_HELP)
    p.add_argument("overrides", nargs="*", help="key=value overrides (values read as YAML)")
    if restart:
        p.add_argument("--restart", action="store_true",
                       help="delete output_dir and start over (default: resume an interrupted run, skip finished "
                       "stages)")


def _load(args: argparse.Namespace) -> Any:
    from mathrecipe.recipe import load_recipe

    recipe_path, overrides = args.recipe, list(args.overrides)
    if recipe_path is not None and "=" in recipe_path and not recipe_path.endswith((".yaml", ".yml")):
        overrides.insert(0, recipe_path)  # `mathrecipe run sft.epochs=3`: no recipe file, only overrides
        recipe_path = None
    return load_recipe(recipe_path, overrides)


def cmd_run(args: argparse.Namespace, stages: tuple[str, ...] = ("sft", "grpo")) -> int:
    from mathrecipe.hardware import distributed_state
    from mathrecipe.pipeline import run
    from mathrecipe.report import render_markdown

    recipe = _load(args)
    report = run(recipe, stages, restart=args.restart)
    if distributed_state().is_main_process:
        out = recipe.output_dir
        print(f"\nReport: {out}/report.md  {out}/report.json  {out}/report.png")
        print(render_markdown(report))  # ends with the verdict, where the run measures one (recipe key verdicts)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from mathrecipe.inspection import cmd_inspect as inspect
    from mathrecipe.inspection import cmd_keys

    if args.keys is not None:  # the recipe's keys: nothing is loaded or built
        print(cmd_keys(args.keys, args.json))
        return 0
    print(inspect(_load(args), args.row, args.json))
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    from mathrecipe.data.build import build

    recipe = _load(args)
    report = build(recipe)
    out = recipe.data.build.output_dir
    print((Path(out) / "data_report.md").read_text())
    print(f"SFT set: {report['outputs']['sft']}  GRPO set: {report['outputs']['grpo']}  report: {out}/data_report.md")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mathrecipe",
        description="The two-stage recipe for math-reasoning LLMs (arXiv 2507.08267): long full-parameter SFT, "
        "then GRPO with format + cosine + length rewards; evaluation with accuracy and tokens.",
    )
    parser.add_argument("--version", action="version", version=f"mathrecipe {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors in the log")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the whole recipe: data -> SFT -> GRPO -> evaluation -> report",
                       description="Run every enabled stage of a recipe in order and write report.json/.md/.png "
                       "to its output_dir. With no recipe, runs the toy recipe (tiny model, synthetic task, CPU).")
    _recipe_args(p, restart=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sft", help="run stage 1 only (data -> SFT with per-epoch evaluation -> report)",
                       description="Run the data step and stage 1 (SFT) of a recipe; GRPO is skipped.")
    _recipe_args(p, restart=True)
    p.set_defaults(func=lambda a: cmd_run(a, ("sft",)))

    p = sub.add_parser("grpo", help="run stage 2 only, from model.name_or_path (e.g. an SFT checkpoint)",
                       description="Run the data step and stage 2 (GRPO) from model.name_or_path, evaluating "
                       "the model before and after. Point model.name_or_path at an SFT checkpoint.")
    _recipe_args(p, restart=True)
    p.set_defaults(func=lambda a: cmd_run(a, ("grpo",)))

    p = sub.add_parser("data", help="build the recipe's training data (data build RECIPE.yaml)",
                       description="Training data commands.")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    b = dsub.add_parser(
        "build", help="build the SFT and GRPO sets, decontaminated, with a data report",
        description="Build the stage-1 SFT set and the stage-2 GRPO set from the recipe's table of sources, "
        "data.build.sources (default: the paper's OpenR1-Math-220k long/mid-accuracy sample + openr1_hard + "
        "Light-R1 stage 2, whose problems are the GRPO set; each a hub id or a local file): merged, deduplicated, "
        "shortest correct trace per problem; drop every problem sharing a word n-gram with an evaluation benchmark, "
        "and write sft/, grpo/ (datasets folders) and data_report.{json,md,png} to data.build.output_dir.",
    )
    _recipe_args(b)
    b.set_defaults(func=cmd_data_build)

    p = sub.add_parser(
        "inspect", help="show what SFT, GRPO and evaluation see for one data row, before any training",
        description="Print the SFT text of one row with its trained span marked (the tokens that carry loss), the "
        "GRPO prompt, the evaluation prompt, whether the three prompts are token-identical, and the dtypes training "
        "will use. Loads only the tokenizer, so it works on CPU with any local model folder. With --keys: every "
        "recipe key (or those under a prefix such as rewards.cosine) with its type, default and meaning.",
    )
    _recipe_args(p)
    p.add_argument("--row", type=int, default=0, help="SFT row to show (default 0)")
    p.add_argument("--keys", nargs="?", const="", metavar="PREFIX",
                   help="list the recipe's keys (section, key, type, default, meaning), all or those under PREFIX "
                   "(e.g. data.build.sources); loads nothing")
    p.add_argument("--json", action="store_true", help="print the record (or the keys) as JSON")
    p.set_defaults(func=cmd_inspect)

    from mathrecipe.plan import add_plan_parser

    add_plan_parser(sub)

    from mathrecipe.evaluate.cli import add_eval_parsers

    add_eval_parsers(sub)

    from mathrecipe.solve import add_solve_parser

    add_solve_parser(sub)
    for command in sub.choices.values():  # -q also after the command (`mathrecipe solve -q ...`)
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="only warnings and errors in the log (no progress bar)")
    return parser


def _is_override(word: str) -> bool:
    return "=" in word and not word.startswith("-")


def merge_positionals(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Take ``key=value`` overrides (and a recipe path) that follow an option into ``args``; return what is left.

    argparse matches a command's positionals in one run, so in ``plan toy.yaml --gpus 1 sft.epochs=2`` or
    ``run --restart output_dir=x`` the words after the option are "unrecognized". For commands with overrides, every
    positional word, wherever it stands, is one list: a recipe first (a word that is not ``key=value``, or a
    .yaml/.yml path), then overrides in the order given (a later one wins, as always)."""
    if not hasattr(args, "overrides"):
        return extra
    words = [w for w in extra if not w.startswith("-")]
    if not words:
        return extra
    recipe = getattr(args, "recipe", None)
    merged = ([recipe] if recipe is not None else []) + list(args.overrides) + words
    if merged and (not _is_override(merged[0]) or merged[0].endswith((".yaml", ".yml"))):
        args.recipe, args.overrides = merged[0], merged[1:]
    else:
        args.recipe, args.overrides = None, merged
    return [w for w in extra if w.startswith("-")]


def process_group_open() -> bool:
    """Whether torch.distributed has a default process group (without importing torch: not imported, none)."""
    dist = sys.modules.get("torch.distributed")
    return bool(dist is not None and dist.is_available() and dist.is_initialized())


def end_process_group(open_before: bool) -> None:
    """End the process group the command started (accelerate's, under ``accelerate launch``), as torch asks before
    a process exits: left to the interpreter's exit, gloo's threads aborted a finished rank about 1 run in 10
    (SIGABRT, "terminate called without an active exception"), and a launcher reads that as a failed run. A group
    that was open before the command is its caller's, and stays."""
    if open_before or not process_group_open():
        return
    try:
        sys.modules["torch.distributed"].destroy_process_group()
        state = sys.modules.get("accelerate.state")
        if state is not None:  # a later Accelerator or PartialState in this process starts afresh, not on a dead group
            state.AcceleratorState._reset_state(reset_partial_state=True)
    except Exception as e:  # the command's work is done and written: a failed teardown must not turn it into an error
        logging.getLogger(__name__).warning("could not end the process group: %s", e)


def main(argv: list[str] | None = None) -> int:
    from mathrecipe.errors import MathRecipeError, environment_message

    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except MathRecipeError as e:  # a renamed flag (evaluate.sampling.RenamedFlag): one line naming the new one
        print(f"mathrecipe: error: {e}", file=sys.stderr)
        return 2
    left = merge_positionals(args, extra)
    if left:
        parser.error(f"unrecognized arguments: {' '.join(left)}")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from mathrecipe.console import error_line, weight_bars

    group_before = process_group_open()
    try:
        with weight_bars():  # a small model's load/save draws no bar; a big one's still does
            return int(args.func(args) or 0)
    except MathRecipeError as e:
        error_line(str(e))
        return 2
    except Exception as e:  # a full disk, a forbidden path ...: one line; anything else keeps its traceback
        message = environment_message(e)
        if message is None:
            raise
        error_line(message)
        return 2
    finally:  # on every way out, an error's included: a rank that aborts at exit turns a clean exit code into 134
        end_process_group(group_before)


if __name__ == "__main__":
    sys.exit(main())
