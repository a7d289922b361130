# hashdup: `make demo` runs the main job on sample_data/, `make test` runs the linters and the test suite.
# Both create their own virtualenv (.venv) and install the project with its test extra first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_INDEX ?= .hashdup

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: lint
	$(BIN)/python -m pytest -q

# ruff (lint, import order) and mypy (types), configured in pyproject.toml; part of `make test`
lint: $(STAMP)
	$(BIN)/ruff check hashdup tests bench scripts
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/hashdup index sample_data --index $(DEMO_INDEX)
	@echo '--- hashdup dedup' >&2
	$(BIN)/hashdup dedup --index $(DEMO_INDEX)
	@echo '--- hashdup query (a recompressed copy should come first)' >&2
	$(BIN)/hashdup query sample_data/photos/chelsea.jpg -k 5 --index $(DEMO_INDEX) --table
	@echo '--- hashdup info' >&2
	$(BIN)/hashdup info --index $(DEMO_INDEX)

clean:
	rm -rf $(VENV) $(DEMO_INDEX) .pytest_cache .hypothesis .ruff_cache .mypy_cache
