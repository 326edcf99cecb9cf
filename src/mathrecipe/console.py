"""What a person reads on the console: bars for long work (training steps, evaluation, big data steps and model
files), none for the sub-second steps around it, and no deprecation warning nobody here can act on.

datasets draws a bar for every map, filter and save, transformers one for every weight load and model save; on a
small set or model each lasts a fraction of a second (a tiny ``mathrecipe run`` printed 31 bars around the 4 that
tell something). Each helper uses the libraries' own switches, scoped to a ``with`` block and restored on exit, so
a program that calls mathrecipe keeps its own bars and warnings. The run logs one line per finished step instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# A datasets map/filter/save over fewer rows than this takes a few seconds at most (tokenising long traces runs at
# thousands of rows a second): no bar. A bigger set keeps datasets' bars.
SHORT_ROWS = 10_000
# transformers 5.23 renamed the model's gradient-checkpointing methods (is_/enable/disable -> *activation*) with a
# FutureWarning on the old names; TRL 1.16's generation helpers (trl.models.utils) still call the old ones.
TRL_OLD_CHECKPOINTING_NAMES = (r"`(is_gradient_checkpointing|gradient_checkpointing_enable|"
                               r"gradient_checkpointing_disable)` is deprecated")
# transformers' weight-loading and shard-writing bars appear once the work has lasted this long (tqdm's ``delay``):
# a big model keeps its bar, a small one's load or save prints nothing.
WEIGHT_BAR_DELAY_S = 3.0


@contextmanager
def dataset_bars(rows: int) -> Iterator[None]:
    """datasets' progress bars inside the block only for work on at least :data:`SHORT_ROWS` rows.

    Rule: hide when ``rows < SHORT_ROWS``, unless the user's ``HF_DATASETS_DISABLE_PROGRESS_BARS`` decides (it has
    priority in datasets too) or bars are already off. datasets' switch is put back on exit.
    """
    import datasets

    hide = (rows < SHORT_ROWS and datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is None
            and not datasets.utils.are_progress_bars_disabled())
    if hide:
        datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        if hide:
            datasets.utils.enable_progress_bars()


@contextmanager
def weight_bars() -> Iterator[None]:
    """transformers' own bars inside the block ("Loading weights", "Writing model shards") are drawn only once
    they have run :data:`WEIGHT_BAR_DELAY_S` seconds: a ``delay`` added through transformers' tqdm hook
    (``transformers.utils.logging.set_tqdm_hook``, chained to any hook set before; put back on exit)."""
    from transformers.utils import logging as hf_logging

    previous: Callable[..., Any] | None = None

    def delayed(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        kwargs = {"delay": WEIGHT_BAR_DELAY_S, **kwargs}
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    previous = hf_logging.set_tqdm_hook(delayed)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)


@contextmanager
def trl_checkpointing_calls() -> Iterator[None]:
    """Inside the block, no FutureWarning for :data:`TRL_OLD_CHECKPOINTING_NAMES`: TRL's own calls, which a
    mathrecipe user can neither change nor act on. Every other warning, and these outside the block, still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TRL_OLD_CHECKPOINTING_NAMES, category=FutureWarning)
        yield


def error_line(message: str) -> None:
    """Print ``mathrecipe: error: <message>`` to stderr on a line of its own: through ``tqdm.write``, which first
    clears any bar still drawn (a training bar interrupted by the error would otherwise run into the message)."""
    import sys

    from tqdm import tqdm

    tqdm.write(f"mathrecipe: error: {message}", file=sys.stderr)
