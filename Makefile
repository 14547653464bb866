# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs; re-running is cheap (stamp files).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORE_STAMP := $(VENV)/.stamp-core
MM_STAMP := $(VENV)/.stamp-mm

.PHONY: install install-mm demo test benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(CORE_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -U pip wheel "setuptools>=64,<70"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(CORE_STAMP)

# The OpenMMLab stack: mmcv is built from source once and cached outside the repository.
$(MM_STAMP): $(CORE_STAMP) tools/install_mm.sh
	bash tools/install_mm.sh $(PY)
	touch $@

install-mm: $(MM_STAMP)

demo: $(CORE_STAMP)
	$(VENV)/bin/cdarts-export cdarts_imagenet --onnx --out out/cdarts_imagenet

test: $(CORE_STAMP) $(MM_STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) out
