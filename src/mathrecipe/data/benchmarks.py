"""The benchmark registry: MATH-500, AIME 2024/2025, AMC23, GSM8K, or any JSONL / parquet / saved dataset path.

Default source is the public HF hub dataset; a data folder (``--data-dir``, holding the registry's file names) or an
explicit path overrides it. Every problem comes back as ``{"id", "problem", "answer"}``; a missing column or an empty
answer is an error naming the file, the row and the column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathrecipe.data.io import DataError, load_hub
from mathrecipe.data.problems import load_problems, to_problems
from mathrecipe.hub import looks_local, require_hub, resolve


def _gsm8k_answer(text: str) -> str:
    """GSM8K's hub answers are worked solutions ending in ``#### 18``; the gold answer is the part after it."""
    return text.split("####")[-1].strip().replace(",", "") if "####" in text else text.strip()


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    hub_id: str
    split: str
    problem_column: str
    answer_column: str
    id_column: str | None
    local_file: str  # its file name inside a data folder
    hub_config: str | None = None
    answer_transform: Callable[[str], str] | None = None


REGISTRY: dict[str, BenchmarkSpec] = {
    "math500": BenchmarkSpec("math500", "HuggingFaceH4/MATH-500", "test", "problem", "answer", "unique_id",
                             "math500_test.jsonl"),
    "aime24": BenchmarkSpec("aime24", "HuggingFaceH4/aime_2024", "train", "problem", "answer", "id",
                            "aime2024.jsonl"),
    "aime25": BenchmarkSpec("aime25", "yentinglin/aime_2025", "train", "problem", "answer", "id", "aime2025.jsonl"),
    "amc23": BenchmarkSpec("amc23", "math-ai/amc23", "test", "question", "answer", "id", "amc23_test.jsonl"),
    "gsm8k": BenchmarkSpec("gsm8k", "openai/gsm8k", "test", "question", "answer", None, "gsm8k_test.jsonl",
                           hub_config="main", answer_transform=_gsm8k_answer),
}


def load_benchmark(
    name: str,
    data_dir: str | Path | None = None,
    problem_column: str | None = None,
    answer_column: str | None = None,
    limit: int | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """(benchmark name, problems) for a registry name or a path to a JSONL / parquet / saved dataset.

    A registry name reads ``data_dir/<its file>`` when ``data_dir`` is given, else the hub dataset.
    """
    spec = REGISTRY.get(name)
    if spec is not None:
        pcol, acol = problem_column or spec.problem_column, answer_column or spec.answer_column
        if data_dir is not None:
            path = Path(data_dir) / spec.local_file
            if not path.exists():
                raise DataError(f"benchmark {name!r}: {path} not found in the data folder {data_dir}")
            # local copies are normalised to id/problem/answer
            problems = load_problems(path, problem_column=problem_column or "problem",
                                     answer_column=answer_column or "answer")
        else:
            what = f"benchmark {name!r}"
            require_hub(spec.hub_id, what, f"Pass a data folder holding {spec.local_file} (mathrecipe eval "
                        "--data-dir DIR, or data.build.benchmark_dir) or a local JSONL path as the benchmark.")
            ds = load_hub(spec.hub_id, spec.split, what, name=spec.hub_config)
            problems = to_problems(ds.to_list(), f"{spec.hub_id} ({spec.split})", pcol, acol, spec.id_column,
                                   answer_transform=spec.answer_transform)
    else:
        path = Path(name)
        if not path.exists() and looks_local(name):
            resolve(name, f"benchmark {name!r}", f"Use a registry name ({', '.join(REGISTRY)}) or an existing file.")
        if not path.exists():
            raise DataError(
                f"unknown benchmark {name!r}: not a registry name ({', '.join(REGISTRY)}) nor an existing file"
            )
        problems = load_problems(path, problem_column=problem_column or "problem",
                                 answer_column=answer_column or "answer")
        name = path.stem
    return name, problems[:limit] if limit else problems
