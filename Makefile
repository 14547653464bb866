# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs; re-running is cheap (stamp files).
# setuptools >= 77.0.3 for torch, < 80.9 so that pkg_resources (mmengine's mmdet::/mmseg:: config bases) is
# there without a warning on every import.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORE_STAMP := $(VENV)/.stamp-core
MM_STAMP := $(VENV)/.stamp-mm

.PHONY: install install-mm demo demo-train test benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(CORE_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -U pip wheel "setuptools>=77.0.3,<80.9"
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

# Retrain cdarts_cifar (C=8, 5 cells) on scikit-learn's handwritten digits in a few minutes on 2 CPU cores,
# then export it with its weights and check that ONNX Runtime predicts the same class on >= 99.5% of val images.
DEMO_THREADS ?= 2
DEMO_EPOCHS ?= 8
demo-train: $(CORE_STAMP)
	$(PY) tools/prepare_digits.py --out out/digits --size 32
	rm -rf out/demo-train
	$(PY) -m cdarts_deploy.commands.train cdarts_cifar --data-root out/digits --out out/demo-train \
		--preset cpu-smoke --width 8 --cells 5 --epochs $(DEMO_EPOCHS) --batch-size 32 --hflip 0 --cutout 0 \
		--drop-path 0 --threads $(DEMO_THREADS)
	$(PY) -m cdarts_deploy.commands.export out/demo-train/genotype.json --onnx --layout cifar --width 8 --cells 5 \
		--num-classes 10 --input-size 32 --checkpoint out/demo-train/best.pth --out out/demo-train/export
	$(PY) -m cdarts_deploy.commands.evaluate out/demo-train/best.pth --data-root out/digits \
		--onnx out/demo-train/export/cdarts_cifar.onnx --min-agreement 0.995 --threads $(DEMO_THREADS) \
		--json out/demo-train/eval.json

# The whole suite, then the tests whose results depend on the CPU's kernels once more with torch's and oneDNN's
# AVX2 paths forced: on an AVX-512 machine that covers what AVX2-only machines run (ONNX Runtime still picks its
# INT8 kernels by the real CPU).
FORCED_AVX2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2

test: $(CORE_STAMP) $(MM_STAMP)
	$(PY) -m pytest -q -n 2 tests
	$(FORCED_AVX2) $(PY) -m pytest -q -n 2 -m isa_sensitive tests

clean:
	rm -rf $(VENV) out
