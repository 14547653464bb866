"""TensorRT library: one clear user error where there is no NVIDIA GPU or no tensorrt package.

Building and checking a real engine needs an NVIDIA GPU: ``tools/gpu_check.py`` does that on such a machine.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from cdarts_deploy.deploy import trt
from cdarts_deploy.deploy.versions import tensorrt_version
from cdarts_deploy.errors import UserError

HAS_TRT = torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None


def expected_reason() -> str:
    return "NVIDIA GPU" if not torch.cuda.is_available() else "'tensorrt' Python package"


@pytest.mark.skipif(HAS_TRT, reason="this machine can run TensorRT; tools/gpu_check.py checks engines there")
def test_require_tensorrt_names_what_is_missing_and_the_fix():
    with pytest.raises(trt.TensorRTUnavailable) as info:
        trt.require_tensorrt()
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert expected_reason() in message
    assert "\n" not in message
    assert "ONNX Runtime needs no GPU" in message or "pip install" in message


@pytest.mark.skipif(HAS_TRT, reason="this machine can run TensorRT")
def test_build_engine_fails_before_writing_anything(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not used")
    with pytest.raises(trt.TensorRTUnavailable):
        trt.build_engine(onnx_file, tmp_path / "m.engine", (32, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_tensorrt_version_probe_never_touches_the_gpu():
    version = tensorrt_version()
    assert version is None or version[0].isdigit()
