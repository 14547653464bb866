# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs; re-running is cheap (stamp files).
# setuptools >= 77.0.3 for torch, < 80.9 so that pkg_resources (mmengine's mmdet::/mmseg:: config bases) is
# there without a warning on every import.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORE_STAMP := $(VENV)/.stamp-core
MM_STAMP := $(VENV)/.stamp-mm

.PHONY: install install-mm demo demo-train test test-torch-floor benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# pyproject.toml declares the supported torch range; .venv gets exactly the tested pair (both lie on this disk, so
# no download), installed before the package so that its range keeps them.
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1

$(CORE_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -U pip wheel "setuptools>=77.0.3,<80.9"
	$(PY) -m pip install -q $(TORCH_PAIR)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(CORE_STAMP)

# The OpenMMLab stack: mmcv is built from source once and cached outside the repository.
$(MM_STAMP): $(CORE_STAMP) tools/install_mm.sh
	bash tools/install_mm.sh $(PY)
	touch $@

install-mm: $(MM_STAMP)

demo: $(CORE_STAMP)
	$(VENV)/bin/cdarts-export cdarts_imagenet --onnx --out out/cdarts_imagenet --overwrite  # its own folder: re-runs replace it

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

# The TensorRT-facing modules are type-checked against TensorRT's published stubs (no TensorRT needed).
# Last, the core tests on the lowest supported torch (below).
test: $(CORE_STAMP) $(MM_STAMP)
	$(PY) -m ruff check .
	$(PY) -m tools.trt_typecheck
	$(PY) -m pytest -q -n 2 tests
	$(FORCED_AVX2) $(PY) -m pytest -q -n 2 -m isa_sensitive tests
	$(MAKE) test-torch-floor

# The lowest supported torch (pyproject.toml's floor) in a venv of its own, without the OpenMMLab stack: installs
# the floor pair, then the package with no constraint (the step fails if pip moved torch or torchvision), then runs
# every test that needs no mmcv/mmdet/mmseg.  PyPI's torch 2.10 is a CUDA 12.8 build (about 3.6 GB of wheels).
# torch 2.6-2.9 fail test_dynamic_export (their exporter cannot keep height and width dynamic).
FLOOR_VENV ?= .venv-torch-floor
FLOOR_PY := $(FLOOR_VENV)/bin/python
FLOOR_STAMP := $(FLOOR_VENV)/.stamp-core
TORCH_FLOOR := torch==2.10.0 torchvision==0.25.0
# About 3.6 GB over the network: a dropped connection resumes where it stopped (pip >= 25.1), and a failed attempt
# is retried whole; wheels that finished downloading come from pip's cache the second time.
PIP_PATIENCE := --retries 10 --timeout 60 --resume-retries 30
# Test modules (and tests) that need the OpenMMLab stack and neither skip nor importorskip without it.
MM_ONLY_TESTS := --ignore=tests/test_downstream_configs.py --ignore=tests/test_downstream_data.py \
	--ignore=tests/test_downstream_heads.py --ignore=tests/test_downstream_train.py \
	--ignore=tests/test_downstream_export_e2e.py --ignore=tests/test_export_mm.py \
	--ignore=tests/test_mm_backbones.py --ignore=tests/test_tools_test.py \
	--deselect=tests/test_commands_train.py::test_checkpoint_loads_in_timm_and_the_mm_backbone \
	--deselect=tests/test_command_options.py::test_tools_test_writes_its_metrics_with_json_and_still_takes_out_metrics

$(FLOOR_PY):
	$(PYTHON) -m venv $(FLOOR_VENV)

$(FLOOR_STAMP): pyproject.toml | $(FLOOR_PY)
	$(FLOOR_PY) -m pip install -q -U pip wheel "setuptools>=77.0.3,<80.9"
	for attempt in 1 2 3; do $(FLOOR_PY) -m pip install -q $(PIP_PATIENCE) $(TORCH_FLOOR) && break; \
		if [ $$attempt = 3 ]; then exit 1; fi; echo "torch floor download: attempt $$attempt failed, retrying" >&2; \
		sleep 15; done
	$(FLOOR_PY) -m pip install -q -e ".[dev]"
	$(FLOOR_PY) -c 'import importlib.metadata as md, sys; want = dict(p.split("==") for p in sys.argv[1:]); \
		got = {n: md.version(n) for n in want}; sys.exit(0 if got == want else f"pip moved {want} to {got}")' $(TORCH_FLOOR)
	touch $@

test-torch-floor: $(FLOOR_STAMP)
	$(FLOOR_PY) -m pytest -q -n 2 $(MM_ONLY_TESTS) tests

clean:
	rm -rf $(VENV) $(FLOOR_VENV) out
