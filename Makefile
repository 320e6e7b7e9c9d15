# Two commands for a fresh machine:  make demo  (a fill, step by step)  and  make test.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.canvas-ls-installed

.PHONY: demo test serve check bench clean

# torch is pinned here only: 2.13.0 is the CPU wheel this project is developed on (other versions can
# pull multi-GB CUDA builds). The package itself accepts any torch >= 2.4 a user already has.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/canvas-ls demo

test: $(STAMP)
	$(PY) -m pytest -q

check: $(STAMP)
	$(VENV)/bin/canvas-ls check

bench: $(STAMP)
	$(PY) benchmarks/latency.py
	$(PY) benchmarks/infill_eval.py --limit 50

clean:
	rm -rf $(VENV) .pytest_cache
