"""The paper recipes load, hold exactly the values recipes/paper/README.md sources, and those values reach TRL.

The README tables are the one truth: a row whose recipe key is in backticks is parsed here and must equal the
recipe's value, so the table and the YAML files cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mathrecipe.recipe import GRPO_TO_TRL, GRPO_VLLM_TO_TRL, SFT_TO_TRL, load_recipe

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "recipes" / "paper"
RECIPES = sorted(p.name for p in PAPER.glob("*.yaml"))
# The stages build TRL configs on CPU here: no GPU precision, no DeepSpeed (not installed), nothing loaded.
CPU = ["sft.precision=fp32", "grpo.precision=fp32", "sft.deepspeed=null", "grpo.deepspeed=null"]


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def parse_pins(text: str) -> dict[str, dict[str, Any]]:
    """{recipe file: {dotted recipe key: value}} from the README's pin tables.

    A pin table has "recipe key" and "value" columns and follows an "Applies to:" line naming recipe files; a row is
    a pin when its key cell is one backticked dotted key, and its value is the value cell's first backticked span,
    read as YAML. Later tables override earlier ones for the recipes they name.
    """
    pins: dict[str, dict[str, Any]] = {}
    targets: list[str] | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Applies to:"):
            targets = re.findall(r"`([^`]+\.yaml)`", line)
        if not line.startswith("|"):
            i += 1
            continue
        header = _cells(line)
        table = []
        i += 2  # header and separator
        while i < len(lines) and lines[i].startswith("|"):
            table.append(_cells(lines[i]))
            i += 1
        if "recipe key" not in header:
            continue
        assert targets, f"README table with header {header} has no 'Applies to:' line before it"
        k, v = header.index("recipe key"), header.index("value")
        for cells in table:
            key = re.fullmatch(r"`([A-Za-z_][\w.]*)`", cells[k])
            if not key:
                continue
            value = re.search(r"`([^`]*)`", cells[v])
            assert value, f"README row for {key.group(1)}: the value cell has no backticked value"
            for t in targets:
                pins.setdefault(t, {})[key.group(1)] = yaml.safe_load(value.group(1))
        targets = None
    return pins


PINS = parse_pins((PAPER / "README.md").read_text())


def lookup(recipe: Any, dotted: str) -> Any:
    """``grpo.extra.optim`` -> recipe.grpo.extra["optim"], ``data.build.sources.0.path`` -> the first source's path;
    KeyError naming the key when it is not set."""
    node = recipe
    for part in dotted.split("."):
        if dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}:
            node = getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(f"{dotted}: not set in the recipe")
    return node


def same(a: Any, b: Any) -> bool:
    """Equal, and not by bool/int coincidence (``True == 1``); ints and floats compare by value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return getattr(a, "value", a) == getattr(b, "value", b)  # TRL enums (lr_scheduler_type, optim) by value


def test_parser_reads_pins_and_overrides():
    text = """Applies to: `a.yaml`, `b.yaml`

| setting | recipe key | value | source |
|---|---|---|---|
| lr | `grpo.learning_rate` | `4.0e-6` | S2 |
| doc only | — | 512 | C L74 |
| kw | `grpo.extra.lr_scheduler_kwargs` | `{num_cycles: 0.25}` | x \\| y |

| not a pin table | x |
|---|---|
| `grpo.beta` | `1` |

Applies to: `b.yaml`

| setting | recipe key | value |
|---|---|---|
| lr | `grpo.learning_rate` | `1.0e-6` |
"""
    assert parse_pins(text) == {
        "a.yaml": {"grpo.learning_rate": 4e-6, "grpo.extra.lr_scheduler_kwargs": {"num_cycles": 0.25}},
        "b.yaml": {"grpo.learning_rate": 1e-6, "grpo.extra.lr_scheduler_kwargs": {"num_cycles": 0.25}},
    }


def test_readme_covers_every_paper_recipe():
    assert len(RECIPES) >= 5
    assert sorted(PINS) == RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_holds_the_readme_values(name):
    recipe = load_recipe(PAPER / name)  # no download: the schema is checked, nothing is fetched
    wrong = []
    for key, want in PINS[name].items():
        try:
            got = lookup(recipe, key)
        except KeyError as e:
            wrong.append(str(e))
            continue
        if not same(got, want):
            wrong.append(f"{key}: recipe {got!r}, README {want!r}")
    assert not wrong, f"{name} disagrees with recipes/paper/README.md:\n" + "\n".join(wrong)


@pytest.mark.parametrize("name", RECIPES)
def test_every_trl_passthrough_is_sourced(name):
    """A TRL field set through sft.extra / grpo.extra without a README row would be an unexplained pin."""
    recipe = load_recipe(PAPER / name)
    extras = [f"sft.extra.{k}" for k in recipe.sft.extra] + [f"grpo.extra.{k}" for k in recipe.grpo.extra]
    assert extras, f"{name} pins nothing through extra"
    assert [k for k in extras if k not in PINS[name]] == []


@pytest.mark.parametrize("name", RECIPES)
def test_passthrough_keys_are_trl_fields(name):
    import trl

    recipe = load_recipe(PAPER / name)
    sft_fields = {f.name for f in dataclasses.fields(trl.SFTConfig)}
    grpo_fields = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    assert [k for k in recipe.sft.extra if k not in sft_fields] == []
    assert [k for k in recipe.grpo.extra if k not in grpo_fields] == []


def test_paper_recipes_keep_fp32_master_weights():
    """bf16 compute with fp32 master weights: DeepSpeed's bf16 optimizer, on every enabled stage."""
    for name in RECIPES:
        r = load_recipe(PAPER / name)
        for stage in (r.sft, r.grpo):
            if stage.enabled:
                assert stage.precision == "bf16" and (stage.deepspeed or stage.fsdp), name


class _Built(Exception):
    """Raised by the stand-in config class: the stage built its TRL config; stop before data and model load."""


def _trl_kwargs(monkeypatch, stage: str, recipe: Any, tmp_path: Path) -> dict[str, Any]:
    """The keyword arguments the stage passes to TRL's SFTConfig / GRPOConfig for this recipe."""
    from mathrecipe.grpo import grpo_args
    from mathrecipe.sft import sft_args

    return sft_args(recipe, tmp_path / "sft") if stage == "sft" else grpo_args(recipe, tmp_path / "grpo")


def _as_trl(field: str, value: Any) -> Any:
    """A recipe value as TRL's config holds it: transformers turns report_to "none" into [] and a name into a list."""
    if field == "report_to" and isinstance(value, str):
        return [] if value == "none" else [value]
    return value


def _check_reaches_trl(config: Any, recipe: Any, mapping: dict[str, str], prefix: str, name: str) -> None:
    """Every ``recipe key -> TRL field`` of the stage's map (mathrecipe.recipe: the one the stage builds from) reaches
    TRL's config, and so does every README pin of ``prefix`` (the *.extra pass-through)."""
    wrong = [f"{key} -> {field}: TRL {getattr(config, field)!r}, recipe {lookup(recipe, key)!r}"
             for key, field in mapping.items() if not same(getattr(config, field), _as_trl(field, lookup(recipe, key)))]
    wrong += [f"{key}: TRL {getattr(config, key.split('.')[-1])!r}, README {want!r}"
              for key, want in PINS[name].items()
              if key.startswith(prefix) and not same(getattr(config, key.split(".")[-1]), want)]
    assert not wrong, f"{name}: " + "; ".join(wrong)


@pytest.mark.parametrize("name", [n for n in RECIPES if load_recipe(PAPER / n).sft.enabled])
def test_sft_stage_hands_the_pins_to_trl(name, monkeypatch, tmp_path):
    import trl

    recipe = load_recipe(PAPER / name, CPU)
    kwargs = _trl_kwargs(monkeypatch, "sft", recipe, tmp_path)
    monkeypatch.undo()
    config = trl.SFTConfig(**kwargs)  # TRL itself accepts every field and value
    _check_reaches_trl(config, recipe, SFT_TO_TRL, "sft.extra.", name)
    assert config.completion_only_loss is True  # the project's deliberate deviation (README, "loss on")


TRACE = "Compute 1 + 2 = 3. Wait, let me verify."


def test_paper_sft_trains_the_reasoning_trace_under_the_r1_distill_template(monkeypatch, tmp_path):
    """R1-Distill's template renders an assistant turn as its text after </think>; the SFT stage, with the paper
    recipe's settings, still puts the whole trace in the loss (and the prompt out of it)."""
    import trl
    from conftest import make_template_model_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathrecipe.data.io import write_jsonl
    from mathrecipe.prompts import build_messages
    from mathrecipe.sft import load_sft_dataset, tokenize_sft

    recipe = load_recipe(PAPER / "fast-math-r1-14b.yaml", CPU + ["sft.extra.dataset_num_proc=1",
                                                                  "sft.max_length=256"])
    model_dir = make_template_model_dir(tmp_path / "m", "deepseek_r1_distill")
    kwargs = _trl_kwargs(monkeypatch, "sft", recipe, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    row = {"messages": build_messages("Compute 1 + 2", recipe.data.system_prompt)
           + [{"role": "assistant", "content": f"<think>\n{TRACE}\n</think>\nThe answer is \\boxed{{3}}."}]}
    data = tokenize_sft(load_sft_dataset(write_jsonl([row] * 4, tmp_path / "sft.jsonl")), tokenizer)
    trainer = trl.SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=trl.SFTConfig(**kwargs),
                             train_dataset=data, processing_class=tokenizer)
    block = trainer.train_dataset[0]
    trained = tokenizer.decode([t for t, label in zip(block["input_ids"], block["labels"]) if label != -100])
    assert TRACE in trained and "\\boxed{3}" in trained
    assert "reason step by step" not in trained  # the prompt stays out of the loss


@pytest.mark.parametrize("name", [n for n in RECIPES if load_recipe(PAPER / n).grpo.enabled])
def test_grpo_stage_hands_the_pins_to_trl(name, monkeypatch, tmp_path):
    import trl

    recipe = load_recipe(PAPER / name, CPU)
    kwargs = _trl_kwargs(monkeypatch, "grpo", recipe, tmp_path)
    monkeypatch.undo()
    config = trl.GRPOConfig(**kwargs)
    _check_reaches_trl(config, recipe, GRPO_TO_TRL, "grpo.extra.", name)
    assert config.use_vllm is (recipe.grpo.backend == "vllm")
    if config.use_vllm:
        _check_reaches_trl(config, recipe, GRPO_VLLM_TO_TRL, "grpo.extra.", name)
    # the rewards in the recipe's order, then the zero-weight accuracy monitor (logged, never trained on)
    assert list(recipe.rewards) == ["format", "cosine", "length"]
    assert config.reward_weights == [recipe.rewards[n].weight for n in recipe.rewards] + [0.0]




@pytest.mark.parametrize("name", [n for n in RECIPES if load_recipe(PAPER / n).sft.enabled])
def test_paper_sft_checkpoints_resume_under_deepspeed(name, monkeypatch, tmp_path, tiny_model_dir):
    """17.2: under DeepSpeed, transformers resumes only through deepspeed_load_checkpoint, which loads the engine's
    own state (global_step*/: fp32 master weights, optimizer) and fails without it. Run the Trainer's real
    checkpoint save and resume path with the recipe's SFT arguments and a stand-in engine that writes and reads
    that folder as DeepSpeed does: the checkpoint must be resumable, the HF scheduler included. (DeepSpeed itself is
    not installed here: its config is dropped from the arguments and the engine stands in for it.)"""
    import torch
    import transformers.trainer as trainer_mod
    import trl
    from accelerate.utils.deepspeed import DeepSpeedSchedulerWrapper
    from transformers import AutoModelForCausalLM, Trainer
    from transformers.integrations.deepspeed import deepspeed_load_checkpoint

    recipe = load_recipe(PAPER / name, CPU + ["sft.optim=adamw_torch"])  # 8-bit paged Adam needs a GPU
    assert load_recipe(PAPER / name).sft.deepspeed  # the combination under test: the recipe runs under DeepSpeed
    kwargs = _trl_kwargs(monkeypatch, "sft", recipe, tmp_path)

    class Engine:  # deepspeed.DeepSpeedEngine's checkpoint files, as transformers sees them
        global_steps = 0

        def save_checkpoint(self, save_dir, tag=None, client_state=None, save_latest=True,
                            exclude_frozen_parameters=False):
            tag = tag or f"global_step{self.global_steps}"
            Path(save_dir, tag).mkdir(parents=True)
            Path(save_dir, tag, "mp_rank_00_model_states.pt").write_bytes(b"state")
            Path(save_dir, "latest").write_text(tag)

        def load_checkpoint(self, load_dir, **kw):
            tag = Path(load_dir, "latest").read_text()
            return (str(Path(load_dir, tag)) if Path(load_dir, tag).is_dir() else None), {}

    def deepspeed_trainer():
        t = Trainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=trl.SFTConfig(**kwargs))
        t.create_optimizer_and_scheduler(num_training_steps=20)
        t.is_deepspeed_enabled = True
        t.model_wrapped = t.deepspeed = Engine()
        # ZeRO-3 gathers the 16-bit weights through the engine; here the plain model's weights stand in for them
        monkeypatch.setattr(t, "save_model", lambda output_dir=None, _internal_call=False: t._save(output_dir))
        return t

    monkeypatch.setattr(trainer_mod, "DeepSpeedSchedulerWrapper", DeepSpeedSchedulerWrapper, raising=False)
    trainer = deepspeed_trainer()
    for _ in range(7):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    trainer.state.global_step = trainer.model_wrapped.global_steps = 7
    trainer._save_checkpoint(trainer.model, trial=None)
    ckpt = tmp_path / "sft" / "checkpoint-7"
    resumed = deepspeed_trainer()
    deepspeed_load_checkpoint(resumed.model_wrapped, str(ckpt))  # raises "Can't find a valid checkpoint" without it
    resumed._load_optimizer_and_scheduler(str(ckpt))
    assert resumed.lr_scheduler.last_epoch == 7  # the schedule continues at the saved step
    assert isinstance(resumed.lr_scheduler, torch.optim.lr_scheduler.LambdaLR)
