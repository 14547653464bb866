"""Export -> check -> compare -> report: files appear only when every check passed; a wrong artifact is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cdarts_deploy.commands.export import main as export_main
from cdarts_deploy.deploy import pipeline
from cdarts_deploy.deploy.model_spec import random_batch
from cdarts_deploy.deploy.onnx_graph import GraphCheckError
from cdarts_deploy.deploy.pipeline import InputIndependentError, OnnxExport, Staging, export_verified
from cdarts_deploy.deploy.versions import library_versions

SMALL = ["--width", "8", "--cells", "5", "--input-size", "32", "--latency-iters", "0", "--exporter", "torchscript"]


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()


def _inputs() -> dict[str, np.ndarray]:
    return {"random b1": random_batch(1, (16, 16), seed=1), "random b2": random_batch(2, (16, 16), seed=2)}


EXPORT = OnnxExport((2, 3, 16, 16), exporter="torchscript")


def test_passing_model_writes_onnx_then_report(tmp_path):
    result = export_verified(_net(), tmp_path, "m", EXPORT, _inputs(), {"name": "m"}, latency_iters=2)
    assert result.passed and result.failures == []
    assert [p.name for p in result.written] == ["m.onnx", "m.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["name"] == "m" and report["opset"] == 18 and report["exporter"] == "torchscript"
    assert {(r["input"], r["batch"]) for r in report["parity"]} == {("random b1", 1), ("random b2", 2)}
    assert all(r["passed"] and r["runtime"] == "onnxruntime" for r in report["parity"])
    assert "4 x torch_fp32_noise" in report["parity_tolerance"]["rule"]
    assert report["latency_onnxruntime_cpu"]["iters"] == 2
    assert set(report["versions"]) == set(library_versions())  # the same keys as cdarts-profile's conditions


class _Scaled(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor


@pytest.mark.parametrize("wrong", ["another model", "scaled output"])
def test_a_wrong_artifact_is_refused_and_nothing_is_written(tmp_path, monkeypatch, wrong):
    real_export = pipeline.export_onnx

    def export_wrong(model, path, *args, **kwargs):
        other = _net(seed=7) if wrong == "another model" else _Scaled(model, 1.01)
        real_export(other, path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "export_onnx", export_wrong)
    result = export_verified(_net(), tmp_path, "m", EXPORT, _inputs(), {})
    assert not result.passed and result.written == []
    assert "differs from PyTorch" in result.failures[0]
    assert list(tmp_path.iterdir()) == []


def test_cdarts_export_refuses_an_onnx_file_of_another_model(tmp_path, monkeypatch, capsys):
    real_export = pipeline.export_onnx

    def export_other(model, path, *args, **kwargs):
        from backbones.factory import create_model_from_genotype

        torch.manual_seed(1)
        other = create_model_from_genotype("darts_v2", layout="cifar", width=8, cells=5, num_classes=10).eval()
        real_export(other, path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "export_onnx", export_other)
    out = tmp_path / "out"
    code = export_main(["darts_v2", "--onnx", "--plot", "--out", str(out), *SMALL])
    err = capsys.readouterr().err
    assert code == 1
    (line,) = [ln for ln in err.splitlines() if not ln.startswith("[cdarts-export]")]
    assert "differs from PyTorch" in line and line.endswith("no files written")
    assert list(out.iterdir()) == []


def test_a_graph_that_fails_the_check_is_refused(tmp_path, monkeypatch):
    def reject(path):
        raise GraphCheckError("exported graph contains training-only operators ['Dropout']; export in eval mode")

    monkeypatch.setattr(pipeline, "check_onnx", reject)
    result = export_verified(_net(), tmp_path, "m", EXPORT, _inputs(), {})
    assert not result.passed and "training-only" in result.failures[0]
    assert list(tmp_path.iterdir()) == []


def test_outputs_that_ignore_the_input_are_a_user_error(tmp_path):
    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x.mean(dim=(1, 2, 3), keepdim=False)[:, None] * 0 + self.bias

    with pytest.raises(InputIndependentError, match="do not depend on its input"):
        export_verified(Constant().eval(), tmp_path, "c", EXPORT, _inputs(), {}, require_input_dependence=True)
    assert list(tmp_path.iterdir()) == []


def test_artifact_failures_withhold_every_file(tmp_path):
    def artifacts(verified, staging):
        extra = staging.temp(tmp_path / "m.extra")
        extra.write_text("made, then refused")
        return {"extra": {"file": "m.extra"}}, ["extra file differs from PyTorch"]

    result = export_verified(_net(), tmp_path, "m", EXPORT, _inputs(), {}, artifacts=artifacts)
    assert not result.passed and result.failures == ["extra file differs from PyTorch"]
    assert result.report["extra"] == {"file": "m.extra"}
    assert list(tmp_path.iterdir()) == []


def test_staging_publishes_together_and_cleans_up(tmp_path):
    with Staging() as staging:
        a = staging.temp(tmp_path / "a.txt")
        a.write_text("a")
        folder = staging.folder(tmp_path)
        (folder / "b.txt").write_text("b")
        staging.adopt(folder / "b.txt", tmp_path / "b.txt")
        assert staging.publish() == [tmp_path / "a.txt", tmp_path / "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    with Staging() as staging:
        staging.temp(tmp_path / "c.txt").write_text("never published")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


@pytest.mark.parametrize("verdict", [[], ["detections differ from PyTorch"]])
def test_own_export_and_comparison_go_through_the_same_steps(tmp_path, verdict):
    """A caller's export and comparison (cdarts-export-mm's detection matching): the graph is checked, the
    comparison judges the file in ONNX Runtime, and the report is published with the other files or nothing is."""
    model, x = _net(), _inputs()["random b2"]
    seen = []

    def write(path):
        pipeline.export_onnx(model, path, (2, 3, 16, 16), exporter="torchscript")

    def compare(session):
        seen.append(pipeline.ort.output_names(session))
        return {"own_rule": {"outputs": len(pipeline.ort.run(session, x))}}, list(verdict)

    with Staging() as staging:
        verified = pipeline.verify(staging.temp(tmp_path / "m.onnx"), write, compare)
        assert verified.rows == {"own_rule": {"outputs": 1}} and verified.failures == verdict and seen
        assert verified.reference is None and set(verified.seconds) == {"export", "check", "parity"}
        if not verified.failures:
            staging.temp(tmp_path / "m.sidecar.json").write_text("{}")
            written = pipeline.publish_with_report(staging, tmp_path / "m.json", {"checks": verified.rows})
            assert [p.name for p in written] == ["m.onnx", "m.sidecar.json", "m.json"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ([] if verdict else ["m.json", "m.onnx", "m.sidecar.json"])
    if not verdict:
        assert json.loads((tmp_path / "m.json").read_text()) == {"checks": {"own_rule": {"outputs": 1}}}
