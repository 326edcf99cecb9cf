"""Compatibility: the harness was split by job (generation, samples, metrics, run, inrun, compare, render).

``sft.py`` and ``pipeline.py`` import :func:`evaluate_for_recipe` from here; new code imports
``mathrecipe.evaluate.inrun`` (in-run evaluation) and ``mathrecipe.evaluate.run`` (``mathrecipe eval``).
"""

from mathrecipe.evaluate.inrun import evaluate_for_recipe, evaluate_model, evaluate_saved_model
from mathrecipe.evaluate.run import run_eval

__all__ = ["evaluate_for_recipe", "evaluate_model", "evaluate_saved_model", "run_eval"]
