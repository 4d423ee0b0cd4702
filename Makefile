# movierec: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RECBOLE := recbole==1.2.1   # installed --no-deps: its metadata pins ray<=2.6.3 (pyproject.toml says why)
PIP_FLAGS ?=                # e.g. --extra-index-url https://download.pytorch.org/whl/cpu

.PHONY: install demo test lint bench gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("movierec needs Python >= 3.11, got " + sys.version.split()[0] if sys.version_info < (3, 11) else 0)'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIP_FLAGS) -c constraints.txt -e '.[test]'
	$(PY) -m pip install --quiet --no-deps $(PIP_FLAGS) $(RECBOLE)
	touch $@

demo: install
	$(PY) run.py --model=EASE

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

bench: install
	$(PY) bench/prepare.py
	$(PY) bench/ease.py
	$(PY) bench/s3rec.py
	$(PY) bench/tune.py

gpu-check: install         # one GPU, at most 8 minutes: every CUDA path against the CPU (docs/gpu.md); no GPU: one line
	$(PY) bench/gpu.py

clean:
	rm -rf data outputs
