# The one entry point: `make demo` runs a dispatcher and a worker on example jobs (it
# prints the dashboard's address; DEMO_ARGS="--pause 15 --linger 300" leaves time to watch),
# `make test` runs the whole suite. Both set up .venv themselves on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format docs clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check tqueues tests examples benchmarks docs
	$(BIN)/ruff format --check tqueues tests examples benchmarks docs
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format tqueues tests examples benchmarks docs
	$(BIN)/ruff check --fix tqueues tests examples benchmarks docs

# The documentation site (Sphinx) in build/docs; the suite builds it too (tests/unit/test_docs_build.py).
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -n -q docs build/docs

test: $(STAMP) lint
	bash tests/run $(BIN)/python $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache tqueues-data
