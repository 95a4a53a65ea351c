# cervicontour: `make demo` and `make test` bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A CPU build of torch 2.13.0 lies on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
DEMO_DIR ?= out/demo

.PHONY: install demo test test-slow clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev,dicom,model]" "$(TORCH_PIN)"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/cervicontour demo $(DEMO_DIR)

test: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

test-slow: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) out build *.egg-info src/*.egg-info
