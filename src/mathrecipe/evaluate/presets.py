"""Named evaluation settings (``mathrecipe eval --preset NAME``); explicit flags override a preset's values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    description: str
    values: dict[str, Any]  # EvalConfig fields (samples, temperature, top_p, max_new_tokens, ...)
    samples_by_benchmark: dict[str, int] = field(default_factory=dict)  # registry name -> samples per problem


PRESETS: dict[str, Preset] = {
    # The convention of DeepSeek-R1's report and the papers that follow it (Fast-Math-R1's tables included):
    # sampling at temperature 0.6, top_p 0.95, up to 32,768 tokens; pass@1 averaged over 64 samples on the small
    # sets (AIME 2024/2025, AMC23), 4 on MATH-500.
    "r1": Preset(
        description="DeepSeek-R1 convention: temperature 0.6, top_p 0.95, 32768 new tokens, 64 samples per problem "
        "on aime24/aime25/amc23, 4 on math500 (and on any other benchmark)",
        values={"temperature": 0.6, "top_p": 0.95, "min_p": None, "max_new_tokens": 32768, "samples": 4},
        samples_by_benchmark={"aime24": 64, "aime25": 64, "amc23": 64, "math500": 4},
    ),
}
