VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint kernels-report clean

$(STAMP): setup.py constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check hmr_fast kernels tests benchmarks
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/hmr-fast demo-job

kernels-report: $(STAMP)
	$(VENV)/bin/hmr-fast kernels-report --arch sm_90a
	$(VENV)/bin/hmr-fast kernels-report --arch sm_80

lint: $(STAMP)
	$(PY) -m ruff check --fix hmr_fast kernels tests benchmarks
	$(PY) -m ruff format hmr_fast kernels tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
