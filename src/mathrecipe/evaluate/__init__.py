"""Evaluation: generation backends (hf, vllm), metrics (pass@k, maj@k, budgets), the harness and its CLI."""
