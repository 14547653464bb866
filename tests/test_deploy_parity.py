"""The parity rule: error against the tensor's scale, plus cosine and element-wise relative error."""

import numpy as np

from cdarts_deploy.parity import TOLERANCES, compare_outputs, compare_tensor


def test_error_is_judged_against_the_tensor_scale():
    ref = np.array([[10.0, 0.001, -5.0]], dtype=np.float32)
    tol = TOLERANCES["fp32"]  # atol 1e-4, rtol 1e-3 -> allowed 1e-4 + 1e-3 * 10 = 0.0101
    near = ref + np.array([[0.0, 0.009, 0.0]], dtype=np.float32)
    result = compare_tensor("logits", ref, near, tol)
    assert result.passed
    assert abs(result.max_abs - 0.009) < 1e-6
    assert result.max_rel > 1.0  # element-wise relative error at the tiny logit is large, and reported
    far = ref + np.array([[0.0, 0.0, 0.02]], dtype=np.float32)
    assert not compare_tensor("logits", ref, far, tol).passed


def test_cosine_shape_mismatch_and_output_count():
    ref = np.array([1.0, 0.0], dtype=np.float32)
    assert abs(compare_tensor("a", ref, np.array([0.0, 1.0], np.float32), TOLERANCES["fp32"]).cosine) < 1e-9
    mismatch = compare_tensor("a", ref, np.zeros(3, np.float32), TOLERANCES["fp32"])
    assert not mismatch.passed and mismatch.max_abs == float("inf")
    try:
        compare_outputs(["a", "b"], [ref, ref], [ref])
    except ValueError as exc:
        assert "1 outputs" in str(exc)
    else:
        raise AssertionError("a missing output must be an error")


def test_float32_noise_widens_the_tolerance_for_deep_networks():
    import torch

    from cdarts_deploy.parity import NOISE_FACTOR, float32_noise, torch_outputs

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(6)]).eval()
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    ref = torch_outputs(model, x)
    (noise,) = float32_noise(model, x, ref)
    assert 0 < noise < 1e-4  # float32 rounding, measured against float64

    tiny = [np.full((2, 3), 1e-9, np.float32)]  # near-zero outputs: the relative part cannot help
    off = [tiny[0] + np.float32(2e-4)]
    (plain,) = compare_outputs(["y"], tiny, off)
    assert not plain.passed  # 2e-4 > atol 1e-4
    (widened,) = compare_outputs(["y"], tiny, off, noise=[1e-4])
    assert widened.passed and NOISE_FACTOR * 1e-4 >= 2e-4
