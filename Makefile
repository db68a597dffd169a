# kiln — set-up, demo and tests. `make demo` and `make test` are the README's quick start.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kiln-installed
FASHION_DIR := /usr/share/datasets/fashion-mnist
# pytest-xdist workers for make test (one per core of the 2-core CI machine; each file runs whole on one worker)
TEST_WORKERS ?= 2

.PHONY: setup setup-core data browser demo test lint docs bench clean help

help:
	@echo "make demo   set up .venv (kiln alone), get Fashion-MNIST, train configs/fashion_mnist.yaml and test it"
	@echo "make test   set up .venv and run the test suite (after make lint)"
	@echo "make docs   build the documentation site (docs/, mkdocs.yml) into site/, strictly"
	@echo "make lint   ruff (style, imports, likely bugs), mypy (types) and import-linter (layers) over kiln/"
	@echo "make data   make Fashion-MNIST available (Debian package, else download)"
	@echo "make bench  run the training-speed benchmark (benchmarks/train_speed.py)"

# Two install levels: the core alone for make demo (a first run needs nothing else), and the test, tracker and
# export extras for make test.
CORE := $(VENV)/.kiln-core-installed

$(CORE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(CORE)

$(STAMP): $(CORE) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,ray,wandb,mlflow,export,baseline,timm,hf,detection,data,segmentation]'
	touch $(STAMP)

setup-core: $(CORE)

setup: $(STAMP)

# Fashion-MNIST: the Debian/Ubuntu package when apt is usable (as root), else torchvision's downloader.
data: setup-core
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST found in $(FASHION_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); then \
		echo "installed dataset-fashion-mnist into $(FASHION_DIR)"; \
	else \
		echo "no apt: downloading Fashion-MNIST into ./data/fashion_mnist"; \
		$(PY) -c 'from kiln.data.registry import get_dataset, locate; print(locate(get_dataset("fashion_mnist"), None, True))'; \
	fi

# The estimate: 12 epochs of 55,000 images at the 450-1,100 images/s per core measured on 2-core CPUs (README,
# "Results"); on a GPU the 15 epochs take seconds and start-up dominates. The log shows the time left per epoch.
demo: data
	@$(PY) -c 'import os; from kiln.core.devices import device_type as d; n = len(os.sched_getaffinity(0)); \
		print("make demo: training the default CNN on this GPU: about a minute, most of it start-up" if d("auto") == "cuda" \
		else f"make demo: training 12 epochs on this {n}-core CPU: roughly {12 * 55000 / (1100 * n) / 60:.0f}-{12 * 55000 / (450 * n) / 60:.0f} min (the log shows the time left after each epoch)")'
	$(VENV)/bin/kiln train configs/fashion_mnist.yaml

# Headless Chromium for the report's browser test: Debian's packages, when apt is usable (as root).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null); \
	else \
		echo "no apt as root: the browser test will be skipped"; \
	fi

# Hygiene: ruff over the code, tests and benchmarks; mypy over the package (cached in .mypy_cache); the layers'
# import contracts (.importlinter: imports inside functions count).
lint: setup
	$(VENV)/bin/ruff check kiln tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The real-data and browser tests run when their parts can be had; the rest needs nothing but the venv.
test: setup lint
	-@$(MAKE) --no-print-directory data || echo "warning: Fashion-MNIST unavailable; its learning test will be skipped"
	-@$(MAKE) --no-print-directory browser || echo "warning: no headless Chromium; the browser test will be skipped"
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

# The documentation site: docs/*.md and the API reference from kiln.api's docstrings; --strict fails on a broken
# link or reference (tests/test_docs.py builds it too, inside make test).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: setup
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build site *.egg-info
