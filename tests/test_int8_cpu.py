"""INT8 files that are exact on every x86-64 CPU: the form chosen, recorded and checked, and its agreement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from cdarts_deploy.commands.export import main
from cdarts_deploy.deploy import int8_cpu as ic
from cdarts_deploy.deploy import precision as pr
from cdarts_deploy.deploy.ort import run as ort_run
from cdarts_deploy.deploy.ort import session as ort_session
from cdarts_deploy.deploy.parity import INT8_MIN_TOP1, torch_outputs
from tiny_deploy import GENOTYPE, HW, NET, write_tiny_genotype

THIS_CPU_HAS_VNNI = ic.int8_cpu_form("auto", ic.cpu_flags()) == "vnni"


# ---------------------------------------------------------------------------
# The choice of form
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("requested, flags, form", [
    ("portable", {"avx2", "avx512_vnni"}, "portable"),   # asked for: the flags do not matter
    ("portable", {"avx2"}, "portable"),
    ("vnni", {"avx2"}, "vnni"),                           # asked for, even where this machine lacks it
    ("auto", {"avx2", "avx512f", "avx512_vnni"}, "vnni"),
    ("auto", {"avx2", "avx_vnni"}, "vnni"),
    ("auto", {"avx2", "avx512f", "avx512bw"}, "portable"),  # AVX-512 without VNNI saturates too
    ("auto", set(), "portable"),
])
def test_form_by_request_and_build_machine_flags(requested, flags, form):
    assert ic.int8_cpu_form(requested, flags) == form
    choice = ic.int8_cpu_choice(requested, flags)
    assert choice["form"] == form and choice["requested"] == requested
    assert ("picked for the machine" in choice["reason"]) == (requested == "auto")


def test_portable_is_the_default_and_an_unknown_form_is_refused(tmp_path):
    from cdarts_deploy.commands.export import build_parser

    assert ic.DEFAULT_INT8_CPU == "portable"
    assert build_parser().parse_args(["x", "--int8"]).int8_cpu is None  # None: the default form, portable
    with pytest.raises(ic.Int8CpuError, match="unknown INT8 CPU form"):
        ic.int8_cpu_form("avx2", {"avx2"})


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse avx2 avx512_vnni\n\nprocessor\t: 1\n"
                    "flags\t\t: fpu\n")
    assert ic.cpu_flags(info) == {"fpu", "sse", "avx2", "avx512_vnni"}
    assert ic.cpu_flags(tmp_path / "missing") == frozenset()


# ---------------------------------------------------------------------------
# Files of each form: weights, metadata, the static check, the emulated kernel
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def forms(tiny_network, tmp_path_factory):
    """The tiny network quantized in each form: {name: (path, settings)}."""
    _, path, images = tiny_network
    calibration, _ = pr.split_held_out(images)
    work = tmp_path_factory.mktemp("forms")
    made = {}
    for name, options in {"7bit": dict(cpu="portable", portable_weights="7bit"),
                          "uint8": dict(cpu="portable", portable_weights="uint8"),
                          "vnni": dict(cpu="vnni")}.items():
        dst = work / f"tiny.{name}.int8.onnx"
        made[name] = dst, pr.quantize_int8(path, dst, calibration, **options)
    return made


def _weights(path: Path) -> list[np.ndarray]:
    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    return [numpy_helper.to_array(inits[n.input[3]]) for n in proto.graph.node if n.op_type == "QLinearConv"]


def test_each_form_stores_its_weights_records_itself_and_is_checked(forms):
    seven, _ = forms["7bit"]
    weights = _weights(seven)
    assert weights and all(w.dtype == np.int8 for w in weights)
    assert max(int(np.abs(w.astype(int)).max()) for w in weights) <= ic.SAFE_WEIGHT_MAGNITUDE
    assert ic.metadata(seven)[ic.METADATA_KEY] == "portable"
    assert "7-bit" in ic.metadata(seven)[ic.METADATA_WEIGHTS_KEY]
    check = ic.verify(seven)
    assert check.safe and check.integer_ops == len(weights) and check.max_abs_int8_weight <= 64

    uint8, settings = forms["uint8"]
    assert all(w.dtype == np.uint8 for w in _weights(uint8)) and settings["uint8_weights"] == len(weights)
    check = ic.verify(uint8)
    assert check.safe and check.uint8_weight_ops == check.integer_ops
    assert ic.metadata(uint8)[ic.METADATA_KEY] == "portable"

    vnni, settings = forms["vnni"]
    assert max(int(np.abs(w.astype(int)).max()) for w in _weights(vnni)) == 127
    assert ic.metadata(vnni)[ic.METADATA_KEY] == "vnni" and settings["int8_cpu"] == "vnni"
    check = ic.verify(vnni)  # honest about its form: kept, but not safe without VNNI
    assert not check.safe and check.saturating_ops and settings["non_vnni_check"]["safe"] is False


def test_a_file_that_claims_portable_with_8bit_weights_is_refused(forms, tmp_path):
    vnni, _ = forms["vnni"]
    liar = onnx.load(str(vnni))
    ic.stamp(liar, "portable", "int8 symmetric 7-bit (reduce_range)")
    with pytest.raises(ic.Int8CpuError, match="claims cdarts.int8_cpu=portable.*saturate"):
        ic.verify(liar)
    path = tmp_path / "liar.onnx"
    onnx.save(liar, str(path))
    with pytest.raises(ic.Int8CpuError):
        ic.verify(path)


def test_quantizer_never_publishes_a_portable_file_that_could_saturate(tiny_network, tmp_path, monkeypatch):
    """The quantizer's own output is checked before it is published: 8-bit weights under a portable label
    (as if the quantizer ignored the 7-bit request) leave no file."""
    _, path, images = tiny_network
    real = pr.quantize_static  # ONNX Runtime's, as precision imported it
    monkeypatch.setattr(pr, "quantize_static", lambda *a, **k: real(*a, **{**k, "reduce_range": False}))
    with pytest.raises(ic.Int8CpuError, match="portable"):
        pr.quantize_int8(path, tmp_path / "x.int8.onnx", images[:8], cpu="portable", portable_weights="7bit")
    assert list(tmp_path.iterdir()) == []


def test_cpu_form_is_refused_for_the_tensorrt_file(tiny_network, tmp_path):
    _, path, images = tiny_network
    with pytest.raises(pr.PrecisionError, match="ONNX Runtime target only"):
        pr.quantize_int8(path, tmp_path / "x.onnx", images[:2], target="tensorrt", cpu="portable")
    assert list(tmp_path.iterdir()) == []


def _as_matrix(w: np.ndarray) -> np.ndarray:
    """A QLinearConv weight [N, C, kh, kw] as the [K, N] matrix its im2col product multiplies."""
    return w.reshape(len(w), -1).T


def test_emulated_kernel_without_vnni_saturates_on_8bit_weights_but_not_on_7bit(forms):
    """The non-VNNI sum (pairs of u8*s8 products in saturating int16) against the exact one, on the convolution
    of each file whose weights pair up largest, with the activations that push its pairs hardest."""
    rng = np.random.default_rng(0)

    def worst_case_and_random(w: np.ndarray) -> np.ndarray:
        """255 under the positive (and, second row, the negative) weights of the column whose same-sign pair is
        largest, where that pair sums to 255 * (w1 + w2); a random row."""
        w = w.astype(np.int64)
        pairs = w[0:len(w) - 1:2] + w[1::2]
        col = int(np.abs(pairs).max(0).argmax())
        return np.stack([np.where(w[:, col] > 0, 255, 0), np.where(w[:, col] < 0, 255, 0),
                         rng.integers(0, 256, len(w))]).astype(np.uint8)

    def pair_sum(w: np.ndarray) -> int:
        w = w.astype(np.int64)
        return int(np.abs(w[0:len(w) - 1:2] + w[1::2]).max()) if len(w) > 1 else 0

    def largest(path: Path) -> np.ndarray:
        """The convolution with the largest sum of a neighbouring same-sign weight pair."""
        return max((_as_matrix(w) for w in _weights(path)), key=pair_sum)

    w8 = largest(forms["vnni"][0])
    assert pair_sum(w8) * 255 > 32767
    a = worst_case_and_random(w8)
    exact = a.astype(np.int64) @ w8.astype(np.int64)
    assert not np.array_equal(ic.saturating_u8s8_matmul(a, w8), exact)

    w7 = largest(forms["7bit"][0])
    a = np.concatenate([worst_case_and_random(w7), np.full((1, len(w7)), 255, np.uint8)])
    assert np.array_equal(ic.saturating_u8s8_matmul(a, w7), a.astype(np.int64) @ w7.astype(np.int64))


# ---------------------------------------------------------------------------
# Agreement of each form on a trained network
# ---------------------------------------------------------------------------


def _digits(count: int, offset: int, mean, std) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.images[offset:offset + count, None].astype(np.float32) / 16.0)
    x = torch.nn.functional.interpolate(x, size=HW, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1).numpy()
    m, s = np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]
    return np.ascontiguousarray((x - m) / s, np.float32), data.target[offset:offset + count]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny cell network trained on handwritten digits (agreement means something only where the logits
    are not near-tied), its ONNX file, calibration and held-out digits."""
    from backbones.factory import create_model_from_genotype
    from cdarts_deploy.deploy.onnx_graph import export_onnx

    torch.manual_seed(0)
    model = create_model_from_genotype(GENOTYPE, **NET)
    mean, std = pr.normalization(model)
    x, y = _digits(800, 0, mean, std)
    calibration, _ = _digits(32, 800, mean, std)
    held_out, labels = _digits(300, 832, mean, std)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: a second thread only waits, and on a busy CPU spins for a long time
    try:
        model.train()
        for _ in range(60):
            idx = rng.choice(len(x), 16, replace=False)
            out = model(torch.from_numpy(x[idx]))
            loss = torch.nn.functional.cross_entropy(out[0] if isinstance(out, tuple) else out,
                                                     torch.from_numpy(y[idx]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    path = tmp_path_factory.mktemp("trained") / "digits.onnx"
    export_onnx(model, path, (2, 3, *HW), exporter="torchscript")
    reference = torch_outputs(model, held_out)[0]
    assert (reference.argmax(1) == labels).mean() > 0.5  # far above chance (0.1): agreement on real margins
    return path, calibration, held_out, reference


@pytest.mark.parametrize("form, options", [("7bit", dict(cpu="portable", portable_weights="7bit")),
                                           ("uint8", dict(cpu="portable", portable_weights="uint8")),
                                           ("default", {})])
def test_portable_forms_agree_with_pytorch_on_held_out_digits(trained, tmp_path, form, options):
    """Exact on every x86-64 CPU, so this holds on CPUs with and without VNNI alike."""
    path, calibration, held_out, reference = trained
    dst = tmp_path / f"{form}.int8.onnx"
    pr.quantize_int8(path, dst, calibration, **options)
    assert ic.verify(dst).safe
    measured = pr.agreement(reference, ort_run(ort_session(dst), held_out)[0])
    # where the 8-bit form saturates it loses most of its agreement; 7-bit weights may lose a few points
    assert measured["top1_agreement"] >= 0.9 >= INT8_MIN_TOP1 and measured["logit_cosine"] > 0.99


@pytest.mark.skipif(not THIS_CPU_HAS_VNNI, reason="the 8-bit form is only exact on a CPU with VNNI")
def test_vnni_form_agrees_where_vnni_runs_and_uint8_weights_compute_the_same(trained, tmp_path):
    path, calibration, held_out, reference = trained
    files = {}
    for form, options in {"vnni": dict(cpu="vnni"), "uint8": dict(cpu="portable", portable_weights="uint8")}.items():
        files[form] = tmp_path / f"{form}.int8.onnx"
        pr.quantize_int8(path, files[form], calibration, **options)
    logits = {form: ort_run(ort_session(p), held_out)[0] for form, p in files.items()}
    assert pr.agreement(reference, logits["vnni"])["top1_agreement"] >= 0.95
    # the same integer products, summed exactly by both kernels here
    np.testing.assert_array_equal(logits["uint8"], logits["vnni"])


# ---------------------------------------------------------------------------
# cdarts-export
# ---------------------------------------------------------------------------


def _export(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def tiny_genotype(tmp_path) -> Path:
    return write_tiny_genotype(tmp_path)


def test_export_auto_records_the_form_picked_for_this_machine(tmp_path, capsys, calibration_dir, tiny_genotype):
    out = tmp_path / "out"
    code, stdout, err = _export(capsys, str(tiny_genotype), "--int8", "--int8-cpu", "auto", "--calib-dir",
                                str(calibration_dir), "--latency-iters", "0", "--out", str(out))
    assert code == 0, err
    expected = ic.int8_cpu_form("auto", ic.cpu_flags())
    section = json.loads((out / "tinynet.json").read_text())["int8"]["int8_cpu"]
    assert section["requested"] == "auto" and section["form"] == expected
    assert "picked for the machine that made the file" in section["reason"]
    assert section["non_vnni_check"]["safe"] == (expected == "portable")
    assert ic.metadata(out / "tinynet.int8.onnx")[ic.METADATA_KEY] == expected
    line = next(l for l in stdout.splitlines() if "int8 cpu form" in l)
    assert expected in line and "picked for the machine" in line


def test_export_refuses_a_portable_file_with_8bit_weights(tmp_path, capsys, calibration_dir, tiny_genotype,
                                                          monkeypatch):
    """A quantizer that labels 8-bit weights portable: one line, exit 2, nothing written."""
    from cdarts_deploy.deploy import artifacts

    real = pr.quantize_int8

    def mislabelled(src, dst, calibration, **options):
        settings = real(src, dst, calibration, **{**options, "cpu": "vnni"})
        proto = onnx.load(str(dst))
        ic.stamp(proto, "portable", "int8 symmetric 7-bit (reduce_range)")
        onnx.save(proto, str(dst))
        return settings

    monkeypatch.setattr(artifacts.pr, "quantize_int8", mislabelled)
    out = tmp_path / "out"
    code, _, err = _export(capsys, str(tiny_genotype), "--int8", "--calib-dir", str(calibration_dir),
                           "--latency-iters", "0", "--out", str(out))
    assert code == 2
    errors = [line for line in err.splitlines() if not line.startswith("[cdarts-export]")]  # progress log aside
    assert len(errors) == 1 and errors[0].startswith("cdarts-export: error:")
    assert "portable" in errors[0] and "saturate" in errors[0]
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("args, needle", [
    (["--onnx", "--int8-cpu", "vnni"], "add --int8"),
    (["--int8", "--int8-target", "tensorrt", "--int8-cpu", "portable"], "TensorRT Q/DQ file"),
])
def test_export_int8_cpu_option_errors(tmp_path, capsys, calibration_dir, args, needle):
    code, _, err = _export(capsys, "cdarts_cifar", "--calib-dir", str(calibration_dir), *args,
                           "--out", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err
    assert not (tmp_path / "out").exists()
