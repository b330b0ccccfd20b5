# Two commands: `make test` and `make reproduce`. Each sets up what it needs.
# TORCH picks the torch build: the default is the CPU wheel that lies on these machines;
# on your own machine use e.g. `make test TORCH=torch` (or a CUDA build).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PRESET ?= quick
OUT ?= reproduce/$(PRESET)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: setup test test-browser reproduce bench gallery lint clean models check-install

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[test,hf,lightning,tensorboard,html]"
	touch $(STAMP)

# -n auto: one pytest worker per core (pytest-xdist); loadscope keeps each module's tests in
# one worker, so a module-scoped fixture (a trained run file) is built once.
test: setup
	$(BIN)/python -m pytest -n auto --dist loadscope

# The HTML slice page in headless Chromium (the system's: apt-get install chromium), driven
# by Playwright (its own browser download is not used); refreshes the README's screenshot.
test-browser: setup
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[browser]"
	LANDSCAPE_GALLERY=1 $(BIN)/python -m pytest -m browser tests/draw/test_interactive_browser.py

reproduce: setup
	$(BIN)/landscape reproduce --preset $(PRESET) --out $(OUT)

# curvlinops (a benchmark peer) requires torchvision through backpack: installed in one
# command with the pinned torch so that pip cannot replace it, then removed again, because
# torchvision 0.28 does not load with torch 2.13 ("operator torchvision::nms does not
# exist") and an installed torchvision that fails to import breaks every transformers
# model class; curvlinops' operators run without it (measured 2026-12-07).
bench: setup
	$(BIN)/python -m pip install --quiet "$(TORCH)" "torchvision<0.29" -e ".[bench]"
	$(BIN)/python -m pip uninstall --yes --quiet torchvision
	$(BIN)/python bench/train_overhead.py
	$(BIN)/python bench/commit.py
	$(BIN)/python bench/hessian.py
	$(BIN)/python bench/slices.py
	$(BIN)/python bench/any_model.py --parts ratio
	$(BIN)/python bench/any_model.py --parts memory --repeats 1
	$(BIN)/python bench/any_model.py --parts eigen --no-norm --batch 2 --seq 16 --peer-repeats 1
	for c in hessian ggn; do \
	  $(BIN)/python bench/any_model.py --parts eigen --eigen-d 16 --eigen-layers 1 --curvature $$c; \
	  $(BIN)/python bench/any_model.py --parts eigen --eigen-d 64 --eigen-layers 2 --curvature $$c --peer-repeats 1; \
	  $(BIN)/python bench/any_model.py --parts eigen --eigen-d 192 --eigen-layers 2 --curvature $$c --peer-repeats 1; \
	done
	$(BIN)/python bench/any_model.py --parts slice --batch 2 --seq 32

# The README gallery (docs/gallery/*.png, committed) from the quick preset's runs.
gallery: reproduce
	$(BIN)/python figures/gallery.py $(OUT) --out docs/gallery

# models/ is a copy of the recipes shipped in the package (landscape/train/recipes/, the one
# source); tests/train/test_recipe.py fails when the two differ.
models:
	rm -rf models/*.toml models/controls
	cp -r landscape/train/recipes/. models/

# `pip install .` (not editable) into a fresh environment, every dependency from the index,
# then from an empty folder: train a shipped recipe by name, open it with the API, and
# load every reproduce job's recipe (about 8 minutes on 2 busy cores; tests/test_install.py
# checks the same in 1-2 minutes with the dependencies of .venv).
CHECK := build/check-install
check-install:
	rm -rf $(CHECK) && mkdir -p $(CHECK)/empty && $(PYTHON) -m venv $(CHECK)/venv
	$(CHECK)/venv/bin/pip install --quiet "$(TORCH)"
	$(CHECK)/venv/bin/pip install --quiet .
	cd $(CHECK)/empty && ../venv/bin/landscape train looped_attn --preset quick --out x.h5 \
	  --set train.epochs=1 -q && ../venv/bin/python -c "import landscape; \
	  from landscape.reproduce import PRESETS; print(landscape.Run.open('x.h5')); \
	  print(len([j.load() for js in PRESETS.values() for j in js]), 'reproduce jobs found')"

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
