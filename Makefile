# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create and use a local .venv; nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15 tests

demo: $(STAMP)
	$(PY) -m experiments.demo --workdir=demo_workdir

clean:
	rm -rf $(VENV) demo_workdir .pytest_cache
