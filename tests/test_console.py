"""What a person reads: bars for training and evaluation only, no deprecation warning the project causes, and the
libraries' switches put back so a calling program keeps its own bars."""

import re
import subprocess
import sys
import warnings

import datasets
import pytest
from test_sft import TINY
from transformers.utils import logging as hf_logging

from mathrecipe.console import (
    SHORT_ROWS,
    WEIGHT_BAR_DELAY_S,
    dataset_bars,
    error_line,
    trl_checkpointing_calls,
    weight_bars,
)


def test_dataset_bars_hidden_for_short_work_only_and_switch_put_back():
    assert not datasets.utils.are_progress_bars_disabled()
    with dataset_bars(SHORT_ROWS - 1):
        assert datasets.utils.are_progress_bars_disabled()
    assert not datasets.utils.are_progress_bars_disabled()
    with dataset_bars(SHORT_ROWS):
        assert not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()  # the calling program turned them off: they stay off
    try:
        with dataset_bars(1):
            pass
        assert datasets.utils.are_progress_bars_disabled()
    finally:
        datasets.utils.enable_progress_bars()


def test_weight_bars_delay_transformers_bars_and_keep_the_callers_hook():
    calls = []

    def mine(factory, args, kwargs):
        calls.append(kwargs)
        return factory(*args, **kwargs)

    before = hf_logging.set_tqdm_hook(mine)
    try:
        with weight_bars():
            list(hf_logging.tqdm(range(2), desc="Loading weights"))
        assert calls[-1]["delay"] == WEIGHT_BAR_DELAY_S and calls[-1]["desc"] == "Loading weights"
        list(hf_logging.tqdm(range(2)))
        assert "delay" not in calls[-1]  # outside the block: the caller's hook alone
        assert hf_logging.set_tqdm_hook(before) is mine
    finally:
        hf_logging.set_tqdm_hook(before)


def test_only_trls_old_checkpointing_names_are_hidden_and_only_inside():
    old = "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing`"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with trl_checkpointing_calls():
            warnings.warn(old, FutureWarning, stacklevel=1)
            warnings.warn("`other` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn(old, FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["`other` is deprecated", old]


def test_an_error_that_interrupts_a_bar_stands_on_its_own_line(capsys):
    from tqdm import tqdm

    bar = tqdm(total=2, file=sys.stderr)  # e.g. the training bar of a stage whose checkpoint save failed
    bar.update(1)
    error_line("saving failed")
    bar.close()
    assert "mathrecipe: error: saving failed" in capsys.readouterr().err.splitlines()


def _bars(stderr: str) -> list[str]:
    """Each tqdm bar's description (or ""), once: tqdm draws every bar first at 0%."""
    parts = re.split(r"[\r\n]|\x1b\[A", stderr)
    return [m.group(1) or "" for p in parts if (m := re.match(r"^\s*(?:(.*?): *)?\s*0%\|", p))]


@pytest.mark.slow
def test_a_tiny_run_shows_bars_for_training_and_evaluation_only_and_no_deprecation_warning(tmp_path):
    """SFT (1 epoch) then GRPO (2 steps): a training bar per stage, an evaluation bar per evaluation (epoch 1, the
    GRPO policy). Before: 31 bars (every datasets map/filter/save, every weight load and save) and transformers'
    FutureWarning on ``gradient_checkpointing`` twice. DeprecationWarnings are shown for mathrecipe's own lines."""
    code = ("import sys, warnings; warnings.filterwarnings('default', category=DeprecationWarning, "
            "module='mathrecipe'); from mathrecipe.cli import main; sys.exit(main(sys.argv[1:]))")
    overrides = [*TINY, "sft.epochs=1", "grpo.enabled=true", "grpo.max_steps=2", "grpo.max_completion_length=16",
                 "rewards.cosine.max_len=16"]
    proc = subprocess.run([sys.executable, "-c", code, "-q", "run", f"output_dir={tmp_path / 'run'}", *overrides],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not re.search(r"(Future|Deprecation)Warning", proc.stderr), proc.stderr[-3000:]
    bars = _bars(proc.stderr)
    assert len(bars) <= 4 and set(bars) <= {"", "eval epoch 1", "eval grpo"}, bars
