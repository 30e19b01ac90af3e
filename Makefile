# Two commands on a fresh machine with only Python 3.11+:
#   make demo   - set up .venv and run the quickstart translator
#   make test   - set up .venv (with test extras) and run the test suite
# torch is installed first and explicitly, so a CPU machine never pulls CUDA wheels.
# GPU users pick their build, e.g.  make demo TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url <their index>"

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN        := $(VENV)/bin

.PHONY: demo test install install-dev bench gpu-check clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	touch $@

$(VENV)/.core: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --disable-pip-version-check -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.core
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev,hf]"
	touch $@

install: $(VENV)/.core
install-dev: $(VENV)/.dev

demo: $(VENV)/.core
	$(BIN)/glassformer quickstart

BROWSER ?= 1
browser:                   # Debian's chromium + chromedriver for the browser test (as root); BROWSER=0 skips
	@if [ "$(BROWSER)" = 1 ]; then bash tests/install_chromium.sh; fi

test: $(VENV)/.dev browser
	$(BIN)/python -m pytest -q -rs

bench: $(VENV)/.dev        # every benchmark into benchmarks/results; e.g. make bench BENCH_ARGS="--quick" or "--skip-demo"
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

gpu-check: $(VENV)/.dev    # every GPU path on one CUDA GPU -> benchmarks/results/gpu_check.json; GPU_CHECK_ARGS="--smoke --out DIR" on a CPU
	$(BIN)/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs
