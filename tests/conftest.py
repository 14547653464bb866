"""Session-wide test material: calibration pictures and one tiny exported network.

The ONNX export is the slow step, so it happens once per test session and is shared by the
precision, profiling and TensorRT tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny_deploy import GENOTYPE, HW, NET, write_calibration_images


@pytest.fixture(scope="session")
def calibration_dir(tmp_path_factory) -> Path:
    """A folder of 40 structured calibration pictures."""
    return write_calibration_images(tmp_path_factory.mktemp("calib"))


@pytest.fixture(scope="session")
def tiny_network(tmp_path_factory, calibration_dir):
    """(model, onnx_path, calibration images): a small CDARTS network whose BatchNorm statistics come from
    the calibration images (random weights, but activations of a sane scale and logits that differ per image)."""
    import torch

    from backbones.factory import create_model_from_genotype
    from cdarts_deploy.deploy import precision as pr
    from cdarts_deploy.deploy.onnx_graph import export_onnx

    torch.manual_seed(0)
    model = create_model_from_genotype(GENOTYPE, **NET)
    images = pr.load_images(calibration_dir, HW)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the passes
    with torch.no_grad():
        for _ in range(2):
            model(torch.from_numpy(images))
    model.eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(model, path, (2, 3, *HW), exporter="torchscript")  # the fast exporter; both are verified
    return model, path, images


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for a module of tiny models: OpenMP spin-waiting costs more than it gives on 2 cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Modules whose results depend on the CPU's kernels (INT8 in ONNX Runtime, oneDNN in search and training).
# `make test` runs them a second time with torch's AVX2 paths forced (see the Makefile), so a machine of
# either kind exercises both.
ISA_SENSITIVE_MODULES = frozenset({
    "test_commands_export", "test_commands_profile", "test_commands_train", "test_deploy_eval",
    "test_deploy_layer_compare", "test_deploy_precision", "test_depthwise_backward", "test_env", "test_int8_rewrites",
    "test_onednn_guard",
    "test_search_chain", "test_search_e2e", "test_search_latency", "test_search_trainer", "test_search_units",
    "test_training_run",
})


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "isa_sensitive: depends on the CPU's kernels; run again with AVX2 paths forced")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.path.stem in ISA_SENSITIVE_MODULES:
            item.add_marker(pytest.mark.isa_sensitive)


def pytest_sessionstart(session) -> None:
    """A run that asks for torch's AVX2 paths must get them, or the second pass would test nothing new."""
    wanted = os.environ.get("ATEN_CPU_CAPABILITY")
    if wanted:
        import torch

        got = torch.backends.cpu.get_cpu_capability()
        if got.lower() != wanted.lower():
            raise pytest.UsageError(f"ATEN_CPU_CAPABILITY={wanted} asked for, but torch runs {got} kernels")
