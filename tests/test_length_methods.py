"""Length-control methods (issue 20): each method's rewards on hand-made completions, the truncation limit's edge,
ThinkPrune's schedule, the limit measured on dev, refusals, and each method's TRL options reaching the trainer."""

import json
import math
from types import SimpleNamespace

import pytest

from mathrecipe.grpo import build_rewards, equal_groups, grpo_args, measure_limits
from mathrecipe.methods import METHODS
from mathrecipe.recipe import RecipeError, load_recipe
from mathrecipe.rewards import TruncationReward, length_percentile, scheduled_limit

G = 4  # completions per prompt group in these tests
BASE = ["grpo.num_generations=4", "grpo.per_device_train_batch_size=8"]
OK = "<think>\n1 + 1 = 2\n\\boxed{2}\n</think>\nThe answer is \\boxed{2}."
NO_BOX = "<think>\n1 + 1 = 2\n</think>\nThe answer is \\boxed{2}."  # correct, but no answer before </think>
# one group: short correct, long correct, short wrong, long correct without the format (gold 2; "3" is wrong)
COMPLETIONS = [OK, OK, OK.replace("2}", "3}"), NO_BOX]
LENGTHS = [20, 40, 20, 60]
ANSWERS = ["2"] * G


def _recipe(method: str, *extra: str):
    return load_recipe(None, [*BASE, f"grpo.method={method}", "rewards={}", *extra])


def _totals(recipe, measured=None, step=0, max_steps=30, lengths=LENGTHS):
    """What TRL sums per completion (multi_objective_aggregation=sum_then_normalize): sum of weight x reward."""
    funcs, weights = build_rewards(recipe, measured)
    state = SimpleNamespace(global_step=step, max_steps=max_steps)
    ids = [[0] * n for n in lengths]
    out = [0.0] * len(lengths)
    for f, w in zip(funcs, weights):
        vals = f(prompts=["p"] * len(lengths), completions=COMPLETIONS[: len(lengths)], completion_ids=ids,
                 answer=ANSWERS[: len(lengths)], trainer_state=state)
        out = [o + w * v for o, v in zip(out, vals)]
    return out


def _cos(L, correct, max_len=160):
    """The paper's cosine reward: correct 0.1 + 0.45 (1 + cos(pi p)), wrong -0.1 - 0.45 (1 + cos(pi p))."""
    scale = 0.45 * (1 + math.cos(math.pi * min(1.0, L / max_len)))
    return 0.1 + scale if correct else -0.1 - scale


# Kimi k1.5 within the group: lambda = 0.5 - (L - 20) / (60 - 20); correct -> lambda, wrong -> min(0, lambda)
KIMI = [0.5, 0.0, 0.0, -0.5]
FORMAT = [1.0, 1.0, 1.0, 0.0]
COSINE = [_cos(20, True), _cos(40, True), _cos(20, False), _cos(60, True)]


@pytest.mark.parametrize("method, parts", [
    ("paper", (FORMAT, COSINE, KIMI)),
    ("no-format", (COSINE, KIMI)),
    ("no-cosine", (FORMAT, KIMI)),
    ("no-length", (FORMAT, COSINE)),
])
def test_the_paper_and_its_ablations_sum_the_rewards_they_keep(method, parts):
    expected = [sum(p[i] for p in parts) for i in range(G)]
    assert _totals(_recipe(method)) == pytest.approx(expected)


def test_dler_pays_a_correct_answer_only_within_the_limit():
    # limit 40 tokens: L = 40 (= limit) is within, L = 60 is past it; the wrong answer earns nothing anyway
    assert _totals(_recipe("dler", "rewards.truncation.limit=40")) == [1.0, 1.0, 0.0, 0.0]
    assert _totals(_recipe("dler", "rewards.truncation.limit=39")) == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("length, reward", [(29, 1.0), (30, 1.0), (31, 0.0)])
def test_truncation_limit_edge(length, reward):
    """L == limit keeps the reward; limit + 1 loses it."""
    r = TruncationReward(limit=30)
    assert r([OK], answer=["2"], completion_ids=[[0] * length]) == [reward]
    assert r([OK], answer=["3"], completion_ids=[[0] * length]) == [0.0]  # wrong: nothing, whatever the length


def test_truncation_counts_chars_when_asked():
    r = TruncationReward(limit=len(OK), unit="chars")
    assert r([OK, OK + " "], answer=["2", "2"]) == [1.0, 0.0]


def test_thinkprune_budget_tightens_in_thirds_of_training():
    # 30 steps, stages 1, 0.75, 0.5 of 40 tokens: steps 0-9 -> 40, 10-19 -> 30, 20-29 -> 20
    assert [scheduled_limit(40, [1.0, 0.75, 0.5], s, 30) for s in (0, 9, 10, 19, 20, 29, 30)] == \
        [40, 40, 30, 30, 20, 20, 20]
    assert scheduled_limit(40, [1.0], 25, 30) == 40 and scheduled_limit(40, [1.0, 0.5], 0, 0) == 40
    r = _recipe("thinkprune", "rewards.truncation.limit=40")
    assert r.rewards["truncation"].stages == [1.0, 0.75, 0.5]
    lengths = [20, 40, 20, 21]
    assert _totals(r, step=0, lengths=lengths) == [1.0, 1.0, 0.0, 1.0]  # limit 40 (correct, unformatted: counts)
    assert _totals(r, step=10, lengths=lengths) == [1.0, 0.0, 0.0, 1.0]  # limit 30
    assert _totals(r, step=20, lengths=lengths) == [1.0, 0.0, 0.0, 0.0]  # limit 20: L = 20 in, 21 out


def test_length_percentile_is_the_nearest_rank():
    lengths = [10, 20, 30, 40]
    assert [length_percentile(lengths, p) for p in (1, 25, 26, 50, 51, 75, 100)] == [10, 10, 20, 20, 30, 30, 40]
    with pytest.raises(ValueError):
        length_percentile(lengths, 0)


def test_a_null_limit_is_measured_on_dev_from_the_start_model_and_kept_for_resume(tmp_path, monkeypatch):
    import mathrecipe.evaluate.inrun as inrun
    import mathrecipe.grpo as grpo_mod

    calls = []

    def fake_eval(recipe, model_path, tokenizer, problems, desc):
        calls.append((model_path, [p["problem"] for p in problems]))
        return [{"tokens": t, "completion": "x" * t} for t in (50, 10, 40, 20, 30)], {}

    monkeypatch.setattr(inrun, "evaluate_saved_model", fake_eval)
    monkeypatch.setattr(grpo_mod, "load_tokenizer", lambda path, model: None)
    dev = [{"problem": "p1", "answer": "1"}]
    r = _recipe("dler")
    got = measure_limits(r, "start-model", dev, tmp_path)
    assert got["truncation"]["limit"] == 30 and got["truncation"]["percentile"] == 50.0  # median of 10..50
    assert got["truncation"]["completions"] == 5 and calls == [("start-model", ["p1"])]
    assert json.loads((tmp_path / "mathrecipe_limits.json").read_text())["truncation"]["limit"] == 30
    assert measure_limits(r, "start-model", dev, tmp_path)["truncation"]["limit"] == 30 and len(calls) == 1
    assert measure_limits(_recipe("thinkprune"), "start-model", dev, tmp_path)["truncation"]["limit"] == 50  # p90
    assert measure_limits(_recipe("dler", "rewards.truncation.limit=12"), "m", None, tmp_path) == {}  # given
    with pytest.raises(RecipeError, match="no dev problems"):
        measure_limits(_recipe("dler", "rewards.truncation.percentile=25"), "m", None, tmp_path / "other")


def test_a_limit_to_measure_on_dev_needs_dev_problems_before_any_compute():
    with pytest.raises(RecipeError, match=r"rewards.truncation.limit is null: .* set data.dev_path"):
        load_recipe(None, ["grpo.method=dler", "data.toy.n_dev=0"])
    load_recipe(None, ["grpo.method=dler", "data.toy.n_dev=0", "rewards.truncation.limit=60"])  # given: no dev needed


def test_methods_are_refused_when_the_recipe_contradicts_them():
    with pytest.raises(RecipeError, match="grpo.scale_rewards=group contradicts grpo.method=dler"):
        load_recipe(None, ["grpo.method=dler", "rewards={}", "grpo.scale_rewards=group"])
    with pytest.raises(RecipeError, match="rewards.cosine is not one of grpo.method=dler's rewards"):
        load_recipe(None, ["grpo.method=dler", "rewards.cosine.max_len=40"])
    with pytest.raises(RecipeError, match="rewards.length is not one of grpo.method=no-length's rewards"):
        load_recipe("recipes/toy.yaml", ["grpo.method=no-length"])  # the toy lists all three
    with pytest.raises(RecipeError, match="unknown method 'dlr'. did you mean 'dler'"):
        load_recipe(None, ["grpo.method=dlr"])
    # the values a method sets, stated again, are no contradiction (a run's resolved recipe.yaml reloads)
    r = load_recipe(None, ["grpo.method=dler", "grpo.scale_rewards=batch", "grpo.epsilon_high=0.28"])
    assert list(r.rewards) == ["truncation"]


def test_the_resolved_recipe_shows_the_effective_rewards_and_options(tmp_path):
    import yaml

    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(_recipe("dler").to_dict(), sort_keys=False))
    again = load_recipe(tmp_path / "recipe.yaml")
    assert again.to_dict() == _recipe("dler").to_dict()
    d = again.to_dict()
    assert d["grpo"]["method"] == "dler" and d["grpo"]["scale_rewards"] == "batch"
    assert d["grpo"]["epsilon_high"] == 0.28
    assert d["rewards"] == {"truncation": {"weight": 1.0, "limit": None, "percentile": 50.0, "unit": "tokens",
                                           "stages": [1.0]}}


@pytest.mark.parametrize("method", [m for m in METHODS if m != "custom"])
def test_each_methods_trl_options_reach_the_trainer(method, tmp_path, tiny_model_dir):
    """GRPOConfig gets the method's options and weights, and GRPOTrainer holds them (names, weights, clip range,
    reward scaling)."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cosine = ["rewards.cosine.max_len=40"] if "cosine" in METHODS[method].rewards else []
    r = _recipe(method, "grpo.max_completion_length=40", *cosine)
    config = trl.GRPOConfig(**grpo_args(r, tmp_path))
    names = list(METHODS[method].rewards) + ["accuracy"]
    for key, value in METHODS[method].grpo.items():
        assert getattr(config, key) == value
    assert config.reward_weights == [1.0] * (len(names) - 1) + [0.0]
    funcs, _ = build_rewards(r, {"truncation": 30})
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "Compute 1 + 1"}], "answer": "2"}] * 8)
    trainer = trl.GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=config,
                              reward_funcs=funcs, train_dataset=data,
                              processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    assert trainer.reward_func_names == names
    assert trainer.reward_weights.tolist() == config.reward_weights
    assert trainer.scale_rewards == METHODS[method].grpo.get("scale_rewards", "group")
    assert trainer.epsilon_high == METHODS[method].grpo.get("epsilon_high", r.grpo.epsilon)


def test_batch_scaling_logs_equal_reward_groups_per_prompt():
    """Under scale_rewards=batch, TRL's frac_reward_zero_std is whether the whole batch's std is 0; the monitor
    logs the share of prompt groups whose weighted totals are all equal, and the health monitor reads that one."""
    from mathrecipe.grpo import accuracy_reward
    from mathrecipe.health import HEALTH_KEYS, HealthMonitor

    assert equal_groups([1.0, 1.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5], 4) == 0.5
    r = _recipe("dler", "rewards.truncation.limit=30")
    funcs, _ = build_rewards(r)
    logged = {}
    monitor = accuracy_reward(funcs)
    # group 1: all correct within 30 tokens (equal), group 2: one past the limit (differs)
    comps, ids = [OK] * 8, [[0] * 20] * 7 + [[0] * 35]
    monitor(prompts=["a"] * 4 + ["b"] * 4, completions=comps, completion_ids=ids, answer=["2"] * 8,
            trainer_state=None, log_metric=lambda k, v: logged.__setitem__(k, v))
    assert logged == {"zero_std_groups_by_prompt": 0.5}
    assert HEALTH_KEYS["zero_std_groups_by_prompt"] == "zero_std_groups"
    health = HealthMonitor(r, monitor)
    health.trainer = SimpleNamespace(_metrics={"train": {"frac_reward_zero_std": [0.0],
                                                         "zero_std_groups_by_prompt": [0.5]}})
    health.on_step_end(None, SimpleNamespace(global_step=1), SimpleNamespace(should_training_stop=False))
    assert health.steps[-1]["zero_std_groups"] == 0.5
    # group scaling (the paper's): no extra metric, TRL's own is per group
    logged.clear()
    accuracy_reward(build_rewards(_recipe("paper"))[0])(completions=comps, completion_ids=ids, answer=["2"] * 8,
                                                        log_metric=lambda k, v: logged.__setitem__(k, v))
    assert logged == {}


@pytest.mark.slow
def test_a_dler_run_measures_its_limit_on_dev_and_trains_with_batch_scaling(tmp_path):
    """`mathrecipe run grpo.method=dler` end to end on a tiny untrained model: the limit is the median of the start
    model's dev lengths (recorded in the report and report.md), recipe.yaml shows the effective rewards and TRL
    options, and the trainer ran with them (its saved arguments)."""
    import torch
    import yaml
    from test_health import TINY

    from mathrecipe.cli import main

    out = tmp_path / "run"
    assert main(["-q", "run", f"output_dir={out}", *TINY, "grpo.max_steps=2", "grpo.max_completion_length=8",
                 "grpo.save_steps=2", "grpo.method=dler", "eval.samples=2"]) == 0
    report = json.loads((out / "report.json").read_text())
    limit = report["grpo"]["limits"]["truncation"]
    assert limit["measured_on"] == "dev" and limit["completions"] == 4 * 2 and 1 <= limit["limit"] <= 8
    assert f"rewards.truncation.limit: {limit['limit']} tokens" in (out / "report.md").read_text()
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["grpo"]["method"] == "dler" and saved["grpo"]["scale_rewards"] == "batch"
    assert list(saved["rewards"]) == ["truncation"] and saved["grpo"]["epsilon_high"] == 0.28
    args = torch.load(out / "grpo" / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert args.scale_rewards == "batch" and args.epsilon_high == 0.28 and args.reward_weights == [1.0, 0.0]
    assert {"reward_truncation", "reward_accuracy", "zero_std_groups"} <= set(report["grpo"]["health"]["steps"][-1])


def _samples(path, correct_ids, tokens, problems=10, samples=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"toy-{i}", "sample": j, "completion": "...", "tokens": tokens, "finished": True,
             "extracted": "1", "answer": "1", "correct": i in correct_ids, "boxes": [[tokens - 1, i in correct_ids]]}
            for i in range(problems) for j in range(samples)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_compare_takes_several_grpo_runs_from_one_start_model_and_draws_the_pareto_plot(tmp_path):
    """Two `mathrecipe grpo` runs from one SFT checkpoint (paper, dler): its evaluation appears once (the first
    run's), each GRPO entry is paired against it, and pareto.png marks the front."""
    import yaml

    from mathrecipe.evaluate.compare import compare, pareto_front

    ckpt = tmp_path / "sft" / "checkpoint-750"
    ckpt.mkdir(parents=True)
    for name, method, correct, tokens in (("paper", "paper", range(9), 40), ("dler", "dler", range(8), 30)):
        d = tmp_path / name
        _samples(d / "eval" / "start.samples.jsonl", range(9), 70)
        _samples(d / "eval" / "grpo.samples.jsonl", correct, tokens)
        (d / "report.json").write_text(json.dumps({"start": {"name": "start model", "checkpoint": str(ckpt)},
                                                   "grpo": {"accuracy": 0.9}}))
        (d / "recipe.yaml").write_text(yaml.safe_dump({"grpo": {"method": method}}))
    result = compare([tmp_path / "paper", tmp_path / "dler"], tmp_path / "cmp")
    table = result["benchmarks"]["test"]["table"]
    assert [r["label"] for r in table] == ["paper: start model", "paper: GRPO", "dler: GRPO"]
    assert table[2]["vs_first"]["accuracy"][0] == pytest.approx(-0.1)  # 8 of 10 against the start's 9
    assert table[2]["vs_first"]["mean_tokens"][0] == pytest.approx(-40)
    assert (tmp_path / "cmp" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # (70, .9) is beaten by (40, .9); (40, .9) and (30, .8) trade tokens for accuracy: both on the front
    assert pareto_front([(70, 0.9), (40, 0.9), (30, 0.8)]) == [2, 1]
