"""One list of library versions, shared by the export and profile reports."""

from __future__ import annotations

import torch

from cdarts_deploy.deploy.versions import conditions, library_versions


def test_library_versions_name_every_runtime():
    versions = library_versions()
    assert set(versions) == {"python", "torch", "timm", "onnx", "onnxruntime", "numpy", "tensorrt", "cuda"}
    assert versions["torch"] == torch.__version__


def test_conditions_carry_the_same_versions():
    cond = conditions(2, "cpu")
    assert cond["versions"] == library_versions() and cond["threads"] == 2 and cond["device"] == "cpu"
    assert cond["gpu"] is None and cond["cpu"]
