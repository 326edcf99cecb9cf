"""Length-control methods for stage 2: each a named combination of rewards (by their registry names, see
:mod:`mathrecipe.rewards`) and the TRL GRPO options it needs, with its source.

``grpo.method`` picks one (default ``paper``). The recipe's ``rewards`` section then lists options for the method's
own rewards only (the method's defaults fill in the rest), and its ``grpo`` keys may not contradict the options the
method sets: both are refused in one line, and ``grpo.method: custom`` lists any rewards with any options. The
resolved ``recipe.yaml`` of a run shows the effective rewards and options.

Dynamic sampling (DLER, after DAPO: drop prompt groups whose rewards are all equal and sample more until the batch
is full) is not in TRL 1.16: ``GRPOTrainer`` scores every generated group and has no filter or refill (no such
``GRPOConfig`` field). Such a group gets advantage 0 there, so it adds no wrong gradient, only a smaller effective
batch. What ``dler`` does instead: the limit is a percentile of the start model's own lengths, so most groups hold
completions on both sides of it (rewards that differ), and the health monitor reports each step's share of
equal-reward groups per prompt group (TRL's own ``frac_reward_zero_std`` is batch-wide under ``scale_rewards:
batch``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

# the paper's three rewards, options from the recipe (their defaults are the toy's)
_PAPER = {"format": {}, "cosine": {}, "length": {}}


@dataclass(frozen=True)
class Method:
    """``rewards``: the rewards it trains on, by registry name, with option defaults a recipe may change;
    ``grpo``: the ``grpo.*`` options it sets (a recipe that sets another value is refused)."""

    rewards: dict[str, dict[str, Any]]
    grpo: dict[str, Any] = field(default_factory=dict)
    source: str = ""


METHODS: dict[str, Method] = {
    "paper": Method(dict(_PAPER), source="Yoshihara et al., arXiv 2507.08267 (Fast-Math-R1): format + cosine "
                                         "length-scaled correctness + Kimi k1.5 length penalty, weights 1"),
    "no-format": Method({"cosine": {}, "length": {}}, source="the paper's method without its format reward"),
    "no-cosine": Method({"format": {}, "length": {}}, source="the paper's method without its cosine reward"),
    "no-length": Method({"format": {}, "cosine": {}}, source="the paper's method without its length penalty"),
    "dler": Method(
        {"truncation": {"percentile": 50.0}},
        {"scale_rewards": "batch", "epsilon_high": 0.28},
        source="Liu et al., arXiv 2510.15110 (DLER): truncation penalty (no reward for a correct answer past the "
               "limit), batch-wise reward normalisation, clip-higher (DAPO's epsilon_high 0.28); the limit: the "
               "start model's median length on dev. Dynamic sampling: not in TRL 1.16 (module docstring)"),
    "thinkprune": Method(
        {"truncation": {"percentile": 90.0, "stages": [1.0, 0.75, 0.5]}},
        source="Hou et al., arXiv 2504.01296 (ThinkPrune): no reward past a length budget that tightens in rounds "
               "(their 4k -> 3k -> 2k tokens); here from the start model's 90th-percentile length on dev, x1, "
               "x0.75, x0.5 over the three thirds of one run. They cut generation at the budget; here rollouts run "
               "to grpo.max_completion_length and a correct answer past the budget earns 0"),
    "custom": Method({}, source="the rewards and options the recipe lists"),
}


def resolve_method(tree: dict[str, Any]) -> dict[str, Any]:
    """The recipe tree with ``grpo.method``'s options filled in, and ``rewards`` as {name: options} in the
    method's order (custom: the recipe's). Raises RecipeError for an unknown method or reward, a renamed key, a
    reward outside the method, or a ``grpo`` key that contradicts it."""
    from mathrecipe.recipe import RecipeError, did_you_mean
    from mathrecipe.rewards import REWARDS

    tree = copy.deepcopy(tree)
    grpo = tree.get("grpo")
    if grpo is None:
        grpo = tree["grpo"] = {}
    if not isinstance(grpo, dict):
        return tree  # the schema check names it
    name = grpo.get("method", "paper")
    if name not in METHODS:
        raise RecipeError(f"grpo.method: unknown method {name!r}. {did_you_mean(str(name), METHODS)}Methods: "
                          f"{', '.join(METHODS)}")
    method = METHODS[name]
    for key, value in method.grpo.items():
        if key in grpo and grpo[key] != value:
            raise RecipeError(f"grpo.{key}={grpo[key]} contradicts grpo.method={name}, which sets {value} "
                              f"({method.source.split(':')[0]}); drop grpo.{key}, or use grpo.method=custom")
        grpo[key] = value
    given = tree.get("rewards") or {}
    if not isinstance(given, dict):
        raise RecipeError(f"rewards: expected a mapping of reward names to options, e.g. rewards: {{format: "
                          f"{{weight: 1}}}}; got {given!r}")
    for old in ("format_weight", "cosine_weight", "length_weight"):
        if old in given:
            new = old.removesuffix("_weight")
            raise RecipeError(f"rewards.{old} was renamed: use rewards.{new}.weight (rewards are listed by name: "
                              f"rewards: {{{new}: {{weight: {given[old]}}}, ...}})")
    for r, opts in given.items():
        if r not in REWARDS:
            raise RecipeError(f"unknown reward 'rewards.{r}'. {did_you_mean(str(r), REWARDS, 'rewards.')}Rewards: "
                              f"{', '.join(REWARDS)}")
        if opts is not None and not isinstance(opts, dict):
            raise RecipeError(f"rewards.{r}: expected a mapping of options (e.g. {{weight: 1}}), got {opts!r}")
        if name != "custom" and r not in method.rewards:
            raise RecipeError(
                f"rewards.{r} is not one of grpo.method={name}'s rewards ({', '.join(method.rewards)}): drop it "
                "(on the command line, 'rewards={}' keeps the method's own), or use grpo.method=custom")
    if name == "custom":
        if not given:
            raise RecipeError("grpo.method=custom trains on the rewards the recipe lists, and it lists none: add "
                              f"e.g. rewards: {{format: {{weight: 1}}}} (rewards: {', '.join(REWARDS)})")
        tree["rewards"] = {r: dict(o or {}) for r, o in given.items()}
    else:
        tree["rewards"] = {r: {**copy.deepcopy(d), **(given.get(r) or {})} for r, d in method.rewards.items()}
    return tree
