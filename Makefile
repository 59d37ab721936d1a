# gptbook: `make book` sets up .venv and runs every chapter (quick profile); `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick
export HF_HUB_OFFLINE ?= 1
export GPTBOOK_CACHE ?= $(CURDIR)/build/cache

.PHONY: book setup data test unit nbval lab exercises refresh bench clean doctor

book: setup
	$(PY) -m gptbook run --profile $(PROFILE) --output-dir build

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

data: $(VENV)/.installed
	$(PY) -m gptbook data fetch

test: setup
	$(PY) -m pytest tests chapters --nbval --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg -q -p no:randomly $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

nbval: setup
	$(PY) -m pytest chapters --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -q

refresh: setup
	$(PY) -m gptbook run --refresh $(CHAPTERS)

lab: setup
	$(VENV)/bin/jupyter lab chapters/

exercises: setup
	$(PY) -m gptbook exercises release

doctor: setup
	$(PY) -m gptbook doctor

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build
