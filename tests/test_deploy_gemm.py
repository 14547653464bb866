"""The measured GEMM rate, the compute floor, and multiply-adds read from an ONNX graph."""

from __future__ import annotations

import pytest

from cdarts_deploy.deploy.gemm import achieved_gflops, compute_floor_ms, measure_gemm_rate, onnx_macs
from tiny_deploy import HW


@pytest.fixture(scope="module")
def tiny(tiny_network):
    return tiny_network


def test_compute_floor_and_achieved_rate():
    # 1 GMAC at 100 GFLOP/s: 2e9 flops / 1e11 flop/s = 20 ms
    assert compute_floor_ms(1e9, 100.0) == pytest.approx(20.0)
    assert achieved_gflops(1e9, 40.0) == pytest.approx(50.0)


def test_gemm_rate_is_measured_and_plausible():
    rate = measure_gemm_rate(threads=1, sizes=(128, 256), repeats=3)
    assert rate.size in (128, 256) and rate.threads == 1
    assert 0.1 < rate.gflops < 5000


def test_onnx_macs_agree_with_the_pytorch_counter(tiny):
    from backbones.complexity import count_macs

    model, path, _ = tiny
    assert onnx_macs(path, 1, HW) == count_macs(model, HW)
    assert onnx_macs(path, 3, HW) == 3 * count_macs(model, HW)


def test_gemm_ceiling_is_the_higher_median_of_torch_and_onnxruntime_with_spread_and_load():
    rate = measure_gemm_rate(threads=1, sizes=(128,), repeats=5)
    assert set(rate.medians) == {"torch", "onnxruntime"}
    assert rate.gflops == max(m["128"] for m in rate.medians.values())
    assert rate.runtime in ("torch", "onnxruntime") and rate.gflops == rate.medians[rate.runtime]["128"]
    assert rate.spread["min"] <= rate.spread["median"] == rate.gflops <= rate.spread["max"]
    assert len(rate.loadavg) == 3 and rate.repeats == 5
    assert set(rate.as_dict()) >= {"gflops", "size", "threads", "device", "dtype", "spread", "medians", "loadavg"}
