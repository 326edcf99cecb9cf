# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# On a CPU-only machine torch must be installed before anything that depends on it, or pip may
# pull a multi-GB CUDA build. Override for your machine, e.g. TORCH="torch --index-url ...".
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench bench-toy bench-length clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mathrecipe run recipes/toy.yaml output_dir=runs/demo

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

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
	rm -rf runs build *.egg-info src/*.egg-info .pytest_cache
