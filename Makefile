VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A triton-only environment with the Triton the GPU machines' torch 2.11 brings: the compile
# report checks the kernels under it too. Cached outside the repo; if it cannot be built the
# report under 3.6 is skipped with that reason.
T36 ?= $(HOME)/.cache/hmr-fast/triton-3.6
T36_STAMP := $(T36)/.installed

.PHONY: test test-torch211 demo lint kernels-report clean

$(STAMP): setup.py constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

$(T36_STAMP):
	python3 -m venv $(T36) && $(T36)/bin/pip install -q triton==3.6.0 && touch $@ \
	  || echo "make: no triton 3.6 environment at $(T36): its compile report is skipped"

test: $(STAMP) $(T36_STAMP)
	$(PY) -m ruff check hmr_fast kernels tests benchmarks
	HMR_FAST_TRITON36=$$(test -f $(T36_STAMP) && echo $(T36)/bin/python || echo none) \
	  $(PY) -m pytest -q

# The GPU machines' stack (torch 2.11 + triton 3.6, shared/GPU.md) on this CPU: the whole
# suite, the kernels under the interpreter, run from the tree with no install. Not part of
# `make test`: a 5 GB environment and about 8 minutes. numpy 2.2: triton 3.6's interpreter
# fails under numpy 2.4 (int() of a 1-element array); the GPU path does not use it.
# tests/test_packaging.py is left out: it builds the wheel (setuptools, not torch's business).
T211 ?= $(HOME)/.cache/hmr-fast/torch-2.11
test-torch211:
	test -x $(T211)/bin/python || python3 -m venv $(T211)
	$(T211)/bin/pip install -q torch==2.11.0 torchvision==0.26.0 triton==3.6.0 numpy==2.2.6 \
	  scipy 'opencv-python-headless<5' tqdm pyyaml numba pytest pytest-benchmark \
	  smplx==0.1.28 onnx onnxruntime tensorboard nvtx h5py
	PYTHONPATH=$(CURDIR) $(T211)/bin/python -m pytest -q -p no:cacheprovider \
	  --deselect tests/test_packaging.py tests/

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
