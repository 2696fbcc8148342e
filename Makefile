# The README's two commands. Each creates or refreshes .venv, installs what it needs, runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; for a GPU, install a CUDA build into .venv first (see README).
TORCH ?= torch==2.13.0
# Use the local copies of the sample data and weights when a ../shared folder sits beside us.
ifneq ($(wildcard ../shared/datasets),)
export MATCHLAB_DATASETS_MIRROR ?= $(abspath ../shared/datasets)
endif
ifneq ($(wildcard ../shared/weights),)
export MATCHLAB_WEIGHTS_MIRROR ?= $(abspath ../shared/weights)
endif

.PHONY: test demo install clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,ray]"  # ray: the tests of --executor ray
	touch $@

install: $(VENV)/.installed

# One test process per core (pytest-xdist), each file on one process so that its fixtures
# are made once; each process then runs torch on one thread (tests/conftest.py).
TEST_PROCESSES ?= $(shell nproc 2>/dev/null || echo 2)
test: $(VENV)/.installed
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile tests

demo: $(VENV)/.installed
	$(VENV)/bin/matchlab demo

clean:
	rm -rf $(VENV) outputs
