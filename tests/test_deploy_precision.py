"""FP16 and INT8 Q/DQ ONNX files: generation, ONNX Runtime parity, INT8 top-1 agreement, bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from cdarts_deploy.deploy import int8_passes as rw
from cdarts_deploy.deploy import precision as pr
from cdarts_deploy.deploy.ort import run as onnxruntime_outputs
from cdarts_deploy.deploy.ort import session as onnxruntime_session
from cdarts_deploy.deploy.parity import TOLERANCES, compare_outputs, top1_agreement, torch_outputs
from cdarts_deploy.errors import UserError
from tiny_deploy import HW


@pytest.fixture(scope="module")
def tiny(tiny_network):
    return tiny_network


def test_fp16_onnx_has_half_weights_float_io_and_passes_fp16_tolerance(tiny, tmp_path):
    model, path, images = tiny
    dst = tmp_path / "tiny.fp16.onnx"
    kept = pr.to_fp16(path, dst)
    proto = onnx.load(str(dst))
    half = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(half) > 10
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # sensitive ops present in the graph stay FP32, each surrounded by casts
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert set(kept) == set(pr.SENSITIVE_OPS) & ops
    assert sum(n.op_type == "Cast" for n in proto.graph.node) >= 2

    ref = torch_outputs(model, images)
    out = onnxruntime_outputs(onnxruntime_session(dst), images)
    (result,) = compare_outputs(["logits"], ref, out, "fp16")
    assert result.passed, result
    assert result.cosine > 0.999
    assert result.max_abs > 0  # really computed in half precision
    assert top1_agreement(ref[0], out[0]) == 1.0


def test_pure_fp16_conversion_also_runs(tiny, tmp_path):
    model, path, images = tiny
    dst = tmp_path / "tiny.fp16pure.onnx"
    assert pr.to_fp16(path, dst, mixed=False) == []
    out = onnxruntime_outputs(onnxruntime_session(dst), images[:4])
    (result,) = compare_outputs(["logits"], torch_outputs(model, images[:4]), out, "fp16")
    assert result.passed, result


def test_int8_qdq_onnx_is_symmetric_and_agrees_on_top1(tiny, tmp_path):
    model, path, images = tiny
    dst = tmp_path / "tiny.int8.onnx"
    settings = pr.quantize_int8(path, dst, images, target="tensorrt")
    assert settings["format"] == "QDQ" and settings["weight_granularity"] == "per-channel"
    proto = onnx.load(str(dst))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 5 and ops.count("DequantizeLinear") > 5
    # TensorRT takes symmetric signed INT8 only: every zero point is an int8 zero
    inits = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = onnx.numpy_helper.to_array(inits[node.input[2]])
            assert zp.dtype == np.int8 and not zp.any()
    # stored quantized tensors are INT8 weights only: biases stay float (no INT32 dequantization)
    stored = [inits[n.input[0]] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert stored and all(t.data_type == onnx.TensorProto.INT8 for t in stored)

    ref = torch_outputs(model, images)
    out = onnxruntime_outputs(onnxruntime_session(dst), images)
    agreement = top1_agreement(ref[0], out[0])
    assert agreement >= 0.8, f"INT8 top-1 agreement {agreement:.2f} on {len(images)} calibration images"
    (result,) = compare_outputs(["logits"], ref, out, "fp32")
    assert result.cosine > 0.97
    assert result.max_abs > TOLERANCES["fp32"].atol  # quantized for real, not a float copy


def test_load_image_resizes_crops_and_normalizes(tmp_path):
    Image.new("RGB", (64, 40), (128, 64, 255)).save(tmp_path / "flat.png")
    arr = pr.load_image(tmp_path / "flat.png", (24, 32))
    assert arr.shape == (3, 24, 32) and arr.dtype == np.float32
    for c, value in enumerate((128, 64, 255)):
        expected = (value / 255 - IMAGENET_DEFAULT_MEAN[c]) / IMAGENET_DEFAULT_STD[c]
        assert np.allclose(arr[c], expected, atol=1e-5)


def test_calibration_folder_errors_name_the_problem(tmp_path):
    assert issubclass(pr.PrecisionError, UserError)
    with pytest.raises(pr.PrecisionError, match="does not exist"):
        pr.image_files(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(pr.PrecisionError, match="holds no images"):
        pr.image_files(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(UserError, match="broken.jpg.*--bad-images skip"):
        pr.load_images(tmp_path, HW)
    with pytest.raises(pr.PrecisionError, match="no image .* decodes"):
        pr.load_images(tmp_path, HW, bad_images="skip")


def test_failed_quantization_leaves_no_file(tiny, tmp_path):
    _, path, _ = tiny
    dst = tmp_path / "bad.int8.onnx"
    with pytest.raises(pr.PrecisionError):
        pr.quantize_int8(path, dst, np.zeros((0, 3, *HW), np.float32))
    with pytest.raises(pr.PrecisionError, match="calibration method"):
        pr.quantize_int8(path, dst, np.zeros((2, 3, *HW), np.float32), method="magic")
    assert list(tmp_path.iterdir()) == []


def test_int8_for_onnxruntime_keeps_whole_cells_in_eight_bits(tiny, tmp_path):
    model, path, images = tiny
    calibration, held_out = pr.split_held_out(images)
    dst = tmp_path / "tiny.ort.int8.onnx"
    settings = pr.quantize_int8(path, dst, calibration)
    assert settings["target"] == "onnxruntime" and settings["weight_granularity"] == "per-channel"
    proto = onnx.load(str(dst))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QLinearConv") > 5 and "QuantizeLinear" in ops
    # depthwise convolutions run in 8 bits, padded to the fast kernel's channel multiple
    grouped = [n for n in proto.graph.node if n.op_type == "QLinearConv"
               and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    made = rw.rewrites_made(settings)
    assert grouped and settings["float_depthwise_convs"] == 0 and made["pad_depthwise_channels"] > 0
    assert all(a.i % rw.DEPTHWISE_CHANNEL_ALIGN == 0 for n in grouped for a in n.attribute if a.name == "group")
    # each Relu got a private input copy and was folded into its range; the only float Relus left read the
    # float stem's output
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    relus = [n for n in proto.graph.node if n.op_type == "Relu"]
    assert rw.rewrites_made(settings)["private_relu_inputs"] > 0 and "QLinearMul" in ops
    assert len(relus) <= 2 and all(producers.get(n.input[0]) in ("Conv", "Mul") for n in relus)
    # the stem convolution and the classifier stay float
    assert settings["float_stem_and_classifier"] and "Gemm" in ops and "QGemm" not in ops
    assert ops.count("Conv") == 1
    measured = pr.agreement(torch_outputs(model, held_out)[0],
                            onnxruntime_outputs(onnxruntime_session(dst), held_out)[0])
    assert measured["images"] == len(held_out) == 20
    assert measured["top1_agreement"] >= 0.8 and measured["logit_cosine"] > 0.97


def test_without_the_rewrites_shared_input_relus_and_depthwise_stay_float(tiny, tmp_path):
    _, path, images = tiny
    dst = tmp_path / "plain.int8.onnx"
    settings = pr.quantize_int8(path, dst, images[:8], rewrite=False, float_depthwise=True)
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    made = rw.rewrites_made(settings)
    assert made["private_relu_inputs"] == 0 and made["pad_depthwise_channels"] == 0
    assert "Relu" in ops and settings["float_depthwise_convs"] > 0


def test_unknown_int8_target_is_a_user_error(tiny, tmp_path):
    _, path, images = tiny
    with pytest.raises(pr.PrecisionError, match="INT8 target"):
        pr.quantize_int8(path, tmp_path / "x.onnx", images[:2], target="tpu")
    assert list(tmp_path.iterdir()) == []


def test_agreement_and_wilson_interval():
    ref = np.eye(10, dtype=np.float32)[np.arange(40) % 10]
    wrong = ref.copy()
    wrong[:4] = np.roll(wrong[:4], 1, axis=1)  # 4 of 40 images change class
    measured = pr.agreement(ref, wrong)
    assert measured["agree"] == 36 and measured["top1_agreement"] == 0.9
    low, high = measured["wilson95"]
    assert 0.76 < low < 0.77 and 0.96 < high < 0.97  # Wilson 95% for 36/40
    assert pr.wilson_interval(20, 20)[1] == 1.0 and pr.wilson_interval(0, 20)[0] == 0.0
    assert pr.agreement(ref, ref)["logit_cosine"] == pytest.approx(1.0)


def test_split_held_out_is_disjoint_and_needs_two_images():
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    calibration, held_out = pr.split_held_out(images)
    assert set(calibration.ravel()).isdisjoint(held_out.ravel()) and len(calibration) + len(held_out) == 10
    with pytest.raises(pr.PrecisionError, match="at least 2"):
        pr.split_held_out(images[:1])


def test_normalization_comes_from_the_models_pretrained_cfg(tmp_path):
    from types import SimpleNamespace

    from backbones.pretrained import CIFAR_MEAN, CIFAR_STD

    cifar = SimpleNamespace(pretrained_cfg={"mean": CIFAR_MEAN, "std": CIFAR_STD})
    assert pr.normalization(cifar) == (tuple(CIFAR_MEAN), tuple(CIFAR_STD))
    assert pr.normalization(object()) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    Image.new("RGB", (8, 8), (128, 64, 255)).save(tmp_path / "flat.png")
    arr = pr.load_images(tmp_path, (8, 8), mean=CIFAR_MEAN, std=CIFAR_STD)[0]
    assert np.allclose(arr[0], (128 / 255 - CIFAR_MEAN[0]) / CIFAR_STD[0], atol=1e-5)
