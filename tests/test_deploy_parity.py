"""The one parity rule: error against the tensor's scale widened by PyTorch's own float32 noise, cosine,
element-wise relative error, INT8 top-1 agreement, and one table of tolerances."""

import numpy as np
import pytest
import torch

from cdarts_deploy.deploy import parity
from cdarts_deploy.deploy.parity import (
    INT8_MIN_TOP1,
    NOISE_FACTOR,
    TOLERANCES,
    TorchReference,
    compare_outputs,
    compare_runtime,
    compare_tensor,
    float32_noise,
    top1_agreement,
    torch_outputs,
)


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
    with pytest.raises(ValueError, match="1 outputs"):
        compare_outputs(["a", "b"], [ref, ref], [ref])


def test_float32_noise_widens_the_tolerance_for_deep_networks():
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


def test_top1_agreement_counts_matching_argmax():
    ref = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], np.float32)
    cand = np.array([[0, 2, 1], [0, 1, 0], [0, 0, 3], [1, 2, 0]], np.float32)
    assert top1_agreement(ref, cand) == 0.75


def _linear_reference():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 5)).eval()
    rng = np.random.default_rng(0)
    inputs = {"random b2": rng.standard_normal((2, 8)).astype(np.float32),
              parity.IMAGES: rng.standard_normal((20, 8)).astype(np.float32)}
    return model, TorchReference(model, inputs)


def test_one_rule_for_every_float_precision_and_runtime():
    model, reference = _linear_reference()
    exact = lambda x: torch_outputs(model, x)  # noqa: E731
    for precision in ("fp32", "fp16"):
        rows = compare_runtime(reference, exact, ["logits"], precision, runtime="tensorrt")
        assert [(r["input"], r["batch"], r["runtime"], r["precision"]) for r in rows] == [
            ("random b2", 2, "tensorrt", precision), (parity.IMAGES, 20, "tensorrt", precision)]
        assert all(r["passed"] and r["torch_fp32_noise"] >= 0 for r in rows)
        assert parity.failures(rows) == []
    scaled = lambda x: [o * 1.05 for o in torch_outputs(model, x)]  # noqa: E731
    rows = compare_runtime(reference, scaled, ["logits"], "fp32")
    assert not any(r["passed"] for r in rows)
    (message, _) = parity.failures(rows)
    assert "fp32 output logits on random b2 differs from PyTorch" in message
    # fp16's tolerance comes from PyTorch's own fp16 error: a 1% error is refused there as in fp32
    off = lambda x: [o * 1.01 for o in torch_outputs(model, x)]  # noqa: E731
    assert not any(r["passed"] for r in compare_runtime(reference, off, ["logits"], "fp16"))
    assert not all(r["passed"] for r in compare_runtime(reference, off, ["logits"], "fp32"))


def test_int8_is_judged_by_top1_on_real_images_only():
    model, reference = _linear_reference()
    same = lambda x: torch_outputs(model, x)  # noqa: E731
    rows = compare_runtime(reference, same, ["logits"], "int8")
    assert [r["passed"] for r in rows] == [None, True]  # random inputs: reported, not judged by top-1
    assert all(r["top1_agreement"] == 1.0 for r in rows) and rows[1]["reference_rolled_top1"] <= 0.4
    shuffled = lambda x: [np.roll(o, 1, axis=1) for o in torch_outputs(model, x)]  # noqa: E731
    rows = compare_runtime(reference, shuffled, ["logits"], "int8")
    assert rows[1]["passed"] is False and rows[1]["top1_agreement"] < INT8_MIN_TOP1
    assert "INT8 top-1 agreement" in parity.failures(rows)[0]


def test_tolerances_are_documented_once():
    table = parity.tolerance_table()
    assert set(table) == {"fp32", "fp16", "int8"}
    assert table["fp32"] == {"atol": 1e-4, "rtol": 1e-3} and table["int8"]["min_top1_agreement"] == INT8_MIN_TOP1
    for precision in ("fp32", "fp16", "int8"):
        assert f"\n{precision} " in parity.__doc__
    assert parity.rule()["tolerances"] == table
    with pytest.raises(ValueError, match="unknown precision"):
        compare_runtime(_linear_reference()[1], lambda x: [], ["y"], "bf16")


# --------------------------------------------------------------------------- checks that refuse wrong artifacts


class _Flat(torch.nn.Module):
    """Outputs that hardly depend on the input, like a deep random network with uncalibrated BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 5)
        with torch.no_grad():
            self.linear.weight.mul_(1e-7)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("batch", [1, 4])
def test_input_independent_reference_fails_at_every_batch(precision, batch):
    model = _Flat().eval()
    x = np.random.default_rng(0).standard_normal((batch, 8)).astype(np.float32)
    label = parity.IMAGES if precision == "int8" else f"random b{batch}"
    reference = TorchReference(model, {label: x})
    exact = lambda b: torch_outputs(model, b)  # noqa: E731 -- even the exact outputs prove nothing here
    rows = compare_runtime(reference, exact, ["logits"], precision)
    assert [r["passed"] for r in rows] == [False]  # the old rule passed these rows
    assert rows[0]["input_dependent"] is False
    (message,) = parity.failures(rows)
    assert "proves nothing" in message and "\n" not in message


def test_other_input_is_a_different_input_of_the_same_shape():
    x1 = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    other = parity.other_input(x1)
    assert other.shape == x1.shape and other.dtype == x1.dtype and not np.allclose(other, x1)
    x3 = np.arange(3 * 2, dtype=np.float32).reshape(3, 2)
    assert np.array_equal(parity.other_input(x3), x3[[2, 0, 1]])


@pytest.fixture(scope="module")
def tiny_onnx(tiny_network):
    """The tiny network's ONNX session and a reference on a random batch 1, batch 2 and real images."""
    from cdarts_deploy.deploy import ort

    model, path, images = tiny_network
    rng = np.random.default_rng(3)
    inputs = {"random b1": rng.standard_normal((1, 3, 32, 32)).astype(np.float32),
              parity.IMAGES: images[:4]}
    return model, ort.session(path, 1), TorchReference(model, inputs)


def _wrong_input_runs(session):
    from cdarts_deploy.deploy import ort

    return {
        "zeros": lambda x: ort.run(session, np.zeros_like(x)),
        "another input": lambda x: ort.run(session, parity.other_input(x)),
        "scaled output": lambda x: [o * 2.0 for o in ort.run(session, x)],
    }


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnxruntime_check_fails_on_a_wrong_artifact(tiny_onnx, precision):
    from cdarts_deploy.deploy import ort

    _, session, reference = tiny_onnx
    right = compare_runtime(reference, lambda x: ort.run(session, x), ["logits"], precision)
    assert all(r["passed"] and r["input_dependent"] for r in right)
    for what, run in _wrong_input_runs(session).items():
        rows = compare_runtime(reference, run, ["logits"], precision)
        assert all(r["input_dependent"] for r in rows), what
        assert not any(r["passed"] for r in rows), what  # every batch, batch 1 included


class _Skip(torch.nn.Module):
    """A cell dropped from the network: passes its previous cell's output through."""

    def forward(self, s0, s1):
        return s1


def test_onnxruntime_check_fails_on_a_network_with_a_dropped_cell(tiny_onnx, tmp_path):
    import copy

    from cdarts_deploy.deploy import ort
    from cdarts_deploy.deploy.onnx_graph import export_onnx

    model, _, reference = tiny_onnx
    broken = copy.deepcopy(model)
    broken.cells[2] = _Skip()
    path = tmp_path / "dropped.onnx"
    export_onnx(broken, path, (2, 3, 32, 32), exporter="torchscript")
    session = ort.session(path, 1)
    for precision in ("fp32", "fp16"):
        rows = compare_runtime(reference, lambda x: ort.run(session, x), ["logits"], precision)
        assert not any(r["passed"] for r in rows), precision


class _Counting(torch.nn.Module):
    """A small per-sample network that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                        torch.nn.Linear(4 * 6 * 6, 5))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.body(x)


def test_reference_shares_one_float32_and_one_float64_pass_with_the_same_results():
    model = _Counting().eval()
    rng = np.random.default_rng(0)
    inputs = {"random b1": rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
              "random b2": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}
    reference = TorchReference(model, inputs)
    for label in inputs:
        reference.outputs(label), reference.other_outputs(label), reference.noise(label)
    assert model.calls == 1  # one float32 pass: both inputs and batch 1's other input (float64 runs on a copy)
    for label, x in inputs.items():
        (alone,) = torch_outputs(model, x)
        np.testing.assert_allclose(reference.outputs(label)[0], alone, rtol=1e-5, atol=1e-6)
        (noise,) = float32_noise(model, x, [alone])
        assert reference.noise(label)[0] == pytest.approx(noise, rel=0.5, abs=1e-7)
    (other,) = torch_outputs(model, parity.other_input(inputs["random b1"]))
    np.testing.assert_allclose(reference.other_outputs("random b1")[0], other, rtol=1e-5, atol=1e-6)


def test_reference_runs_inputs_of_different_shapes_one_by_one():
    rng = np.random.default_rng(0)
    inputs = {"a": rng.standard_normal((2, 3, 8, 8)).astype(np.float32),
              "b": rng.standard_normal((1, 3, 10, 10)).astype(np.float32)}
    reference = TorchReference(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval(), inputs)
    for label, x in inputs.items():
        np.testing.assert_allclose(reference.outputs(label)[0], x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
        assert reference.other_outputs(label)[0].shape == (len(x), 3) and len(reference.noise(label)) == 1
