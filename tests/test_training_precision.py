"""Trainable weights are fp32 masters: a bf16 checkpoint trained at the paper's learning rate really moves."""

import json

import pytest
import torch


def _sft_rows(path, n=40):
    from mathrecipe.prompts import build_messages

    rows = [{"messages": build_messages(f"Compute {10 + i} + 11.") + [
        {"role": "assistant", "content": f"<think>\n{10 + i} + 11 = {21 + i}\n\\boxed{{{21 + i}}}\n</think>\n"
                                          f"The answer is \\boxed{{{21 + i}}}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_bf16_checkpoint_trains_with_fp32_master_weights(tmp_path):
    from conftest import make_template_model_dir
    from transformers import AutoModelForCausalLM

    from mathrecipe.cli import main

    folder = make_template_model_dir(tmp_path / "m", "qwen2_5", dtype="bfloat16")
    start = AutoModelForCausalLM.from_pretrained(folder, dtype="auto")
    assert start.dtype == torch.bfloat16  # what transformers 5 would train in without the fix
    before = {k: v.float().clone() for k, v in start.state_dict().items()}
    ev = tmp_path / "test.jsonl"
    ev.write_text(json.dumps({"problem": "Compute 1 + 1.", "answer": "2"}) + "\n")
    out = tmp_path / "run"
    assert main(["-q", "sft", f"model.name_or_path={folder}", "data.source=files",
                 f"data.sft_path={_sft_rows(tmp_path / 'sft.jsonl')}", f"data.test_path={ev}", "grpo.enabled=false",
                 f"output_dir={out}", "sft.learning_rate=1e-5", "sft.warmup_steps=0", "sft.lr_scheduler=constant",
                 "sft.per_device_train_batch_size=2", "sft.epochs=1", "sft.eval_each_epoch=false", "sft.weight_decay=0"]) == 0
    trained = AutoModelForCausalLM.from_pretrained(out / "sft" / "checkpoint-20", dtype=torch.float32)
    after = trained.state_dict()
    moved = sum(int((after[k].float() != before[k]).sum()) for k in before)
    total = sum(v.numel() for v in before.values())
    assert moved / total > 0.9, f"only {moved}/{total} weights moved"

    # control: the same 20 updates applied to the bf16 weights themselves leave most of them unchanged
    pure = {k: v.clone().to(torch.bfloat16).requires_grad_(True) for k, v in before.items() if v.dim() > 1}
    opt = torch.optim.AdamW(pure.values(), lr=1e-5, weight_decay=0.0)
    for _ in range(20):
        for p in pure.values():
            p.grad = torch.randn_like(p)
        opt.step()
    still = sum(int((p.detach().float() == before[k]).sum()) for k, p in pure.items())
    assert still / sum(p.numel() for p in pure.values()) > 0.5
