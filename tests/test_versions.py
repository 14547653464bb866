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


def test_conditions_record_what_changes_the_numbers():
    cond = conditions(1, "cpu")
    assert len(cond["load"]["loadavg"]) == 3
    assert cond["load"]["steal_fraction"] is None or 0.0 <= cond["load"]["steal_fraction"] <= 1.0
    assert "current_mhz" in cond["cpu_frequency"]
    assert cond["onnxruntime"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert "intra_op_allow_spinning" in cond["onnxruntime"]
    assert set(cond["torch"]) >= {"tf32_matmul", "tf32_cudnn", "cudnn_benchmark"}
    assert cond["nvidia_smi"] is None  # only asked for on CUDA


def test_nvidia_smi_query_is_parsed_and_absent_is_none(tmp_path, monkeypatch):
    from cdarts_deploy.deploy import versions

    monkeypatch.setenv("PATH", str(tmp_path))
    assert versions.nvidia_smi() is None
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H100, 550.54, 1755 MHz, 1980 MHz, 2619 MHz, 700.00 W, 35, 0 %, Enabled'\n")
    fake.chmod(0o755)
    smi = versions.nvidia_smi()
    assert smi["name"] == "NVIDIA H100" and smi["driver_version"] == "550.54" and smi["clocks.sm"] == "1755 MHz"
