"""ONNX export of a cell network with dynamic height and width, checked in ONNX Runtime at odd sizes.

Odd feature-map sizes reach FactorizedReduce (the reduction-cell skip and the input adapter after a
reduction); a shape test frozen by the exporter at the export size would give a Concat shape error or
wrong numbers at other sizes.  Both of torch's exporters are covered: the dynamo exporter (torch.export,
what cdarts-export uses by default) and the older tracing one.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import backbones  # noqa: F401  (registers the timm models)
from backbones.darts_net import DartsNet
from cdarts_deploy.genotype import load

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

EXPORT_SIZE = 32
SIZES = (32, 33, 35, 40, 47)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def calibrated_net(seed: int) -> nn.Module:
    """A tiny CIFAR-layout network whose BN statistics depend on data (so outputs depend on the input)."""
    torch.manual_seed(seed)
    # darts_v2's reduction cell has a skip_connect (FactorizedReduce) edge; every cell after a reduction
    # adapts its input 0 with FactorizedReduce too.
    model = DartsNet(load("darts_v2"), layout="cifar", width=4, cells=5, num_classes=6)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: the running statistics become the data's
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, EXPORT_SIZE + 3, EXPORT_SIZE + 3) * 2.0 + 0.5)
    return model.eval()


def export(model: nn.Module, path, exporter: str) -> None:
    example = torch.randn(1, 3, EXPORT_SIZE, EXPORT_SIZE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}}
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes=axes, opset_version=18)
        else:
            dims = {0: torch.export.Dim("batch", min=1, max=64), 2: torch.export.Dim("height", min=16, max=512),
                    3: torch.export.Dim("width", min=16, max=512)}
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=["input"], output_names=["logits"],
                                        opset_version=18, dynamic_shapes={"x": dims}, verbose=False)
            program.save(str(path))


def agree(expected: np.ndarray, got: np.ndarray) -> bool:
    """Same shape and values within 1e-4 of the output's magnitude."""
    scale = max(1.0, float(np.abs(expected).max()))
    return expected.shape == got.shape and np.allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return calibrated_net(seed=0)


@pytest.fixture(scope="module", params=["dynamo", "torchscript"])
def session(request, model, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "net.onnx"
    export(model, path, request.param)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_outputs_depend_on_the_input(model):
    with torch.no_grad():
        a, b = model(torch.randn(2, 3, 33, 33)), model(torch.randn(2, 3, 33, 33))
    assert not torch.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("size", SIZES)
def test_onnx_matches_pytorch_at_every_size(session, model, size):
    x = torch.randn(2, 3, size, size + 2)  # height and width differ, so neither is read for the other
    with torch.no_grad():
        expected = model(x).numpy()
    (got,) = session.run(None, {"input": x.numpy()})
    assert got.shape == expected.shape == (2, 6)
    assert agree(expected, got), float(np.abs(got - expected).max())


def test_a_different_model_fails_the_comparison(session):
    x = torch.randn(2, 3, 35, 35)
    with torch.no_grad():
        other = calibrated_net(seed=1)(x).numpy()
    (got,) = session.run(None, {"input": x.numpy()})
    assert not agree(other, got)
