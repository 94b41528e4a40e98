# kdnb — the two commands are `make book` and `make test`; each sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdnb-installed
PROFILE ?= book
PYTEST_ARGS ?=

.PHONY: setup book run site test lab bench gpu-check browser clean clean-runs

setup: $(STAMP)

# pip takes torch/torchvision from the local wheel cache where one exists; constraints.txt pins the whole tree.
# --no-cache-dir: the CUDA build of torch fills ~6 GB of the venv and a CI machine once ran out of disk during this
# install; pip's cache would only add to it.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --no-cache-dir -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (kdnb)" >/dev/null
	touch $@

book: setup            ## set up, execute every chapter at PROFILE (default: book), build the site
	$(BIN)/python -m kdnb run --profile $(PROFILE)
	$(BIN)/python -m kdnb site --profile $(PROFILE)

run: setup
	$(BIN)/python -m kdnb run --profile $(PROFILE)

site: setup
	$(BIN)/python -m kdnb site --profile $(PROFILE)

test: setup browser    ## set up, run every test (unit, papermill smoke runs, site in headless Chromium)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m kdnb bench

gpu-check: setup       ## the CUDA paths CPU tests cannot reach (minutes on one GPU); says so and exits 0 without CUDA
	$(BIN)/python -m kdnb.gpu_check

# JupyterLab opens book/**/*.md as notebooks (Jupytext Notebook as the default viewer for Markdown);
# the setting lives in the venv, not in your home folder.
lab: setup
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp .jupyter-lab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) book/

# Debian's chromium for the site test, installed only where we may (root with apt-get); elsewhere that test
# is skipped with a message saying so.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
	  || echo "note: chromium not installed; the site test will be skipped (apt-get install chromium)"; }

# The JavaScript and fonts the site serves itself (MathJax 3, the widget manager), re-fetched from npm with their
# licences. The result is committed: building the book needs neither npm nor a network.
vendor:
	sh book/_vendor/fetch.sh

clean:
	$(BIN)/python -m kdnb clean

clean-runs:
	$(BIN)/python -m kdnb clean --runs
