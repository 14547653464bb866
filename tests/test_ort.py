"""The one ONNX Runtime session factory."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from cdarts_deploy.deploy import ort
from cdarts_deploy.errors import UserError


def test_session_runs_the_file_with_the_requested_threads(tiny_network):
    model, path, images = tiny_network
    sess = ort.session(path, threads=1)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert ort.output_names(sess) == ["output0"]
    (out,) = ort.run(sess, images[:3])
    assert out.shape == (3, 10) and out.dtype == np.float32
    assert ort.run(ort.session(path), images[:3])[0] == pytest.approx(out, abs=1e-5)


def test_unusable_file_is_a_one_line_user_error(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ort.OnnxRuntimeError, match="is not a usable ONNX model") as info:
        ort.session(bogus)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                    reason="onnxruntime-gpu is installed here")
def test_cuda_without_the_provider_names_the_fix(tiny_network):
    with pytest.raises(ort.OnnxRuntimeError, match="onnxruntime-gpu"):
        ort.session(tiny_network[1], device="cuda")


def test_fold_constants_writes_an_equivalent_model(tiny_network, tmp_path):
    _, path, images = tiny_network
    ort.fold_constants(path, tmp_path / "folded.onnx")
    folded, original = ort.session(tmp_path / "folded.onnx"), ort.session(path)
    assert ort.run(folded, images[:2])[0] == pytest.approx(ort.run(original, images[:2])[0], abs=1e-4)
    with pytest.raises(ort.OnnxRuntimeError):
        ort.fold_constants(tmp_path / "missing.onnx", tmp_path / "x.onnx")
