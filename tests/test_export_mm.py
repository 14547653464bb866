"""cdarts-export-mm: detector (raw per-level outputs, no NMS) and segmentor to ONNX, checked in ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from mmengine.registry import MODELS, init_default_scope

from downstream.export_cli import main as export_main
from downstream.runner_setup import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "downstream" / "configs"


def _model_and_checkpoint(config: Path, tmp_path: Path, options: dict) -> tuple[torch.nn.Module, Path]:
    """The config's model with random weights, saved as an mmengine-style checkpoint."""
    cfg = load_config(str(config), options)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    path = tmp_path / "model.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": model.state_dict()}, path)
    return model, path


def _ort(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))


def test_detector_exports_raw_levels_without_nms(tmp_path):
    config = CONFIGS / "retinanet_cdarts-b_fpn_1x_coco.py"
    options = {"model.backbone.init_cfg": None}
    model, ckpt = _model_and_checkpoint(config, tmp_path, options)
    out = tmp_path / "out"
    rc = export_main([str(config), "--checkpoint", str(ckpt), "--input-size", "64x96", "--out", str(out),
                      "--name", "det", "--raw", "--cfg-options", "model.backbone.init_cfg=None"])
    assert rc == 0
    proto = onnx.load(str(out / "det.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"NonMaxSuppression", "TopK"}  # no post-processing in the graph

    x = np.random.default_rng(1).standard_normal((1, 3, 64, 96)).astype(np.float32)
    got = _ort(out / "det.onnx", x)
    with torch.no_grad():
        cls_scores, bbox_deltas = model.bbox_head(model.extract_feat(torch.from_numpy(x)))
    strides = [8, 16, 32, 64, 128]
    assert list(got) == [f"cls_score_s{s}" for s in strides] + [f"bbox_delta_s{s}" for s in strides]
    anchors = model.bbox_head.num_base_priors
    for s, ref_cls, ref_box in zip(strides, cls_scores, bbox_deltas):
        assert got[f"cls_score_s{s}"].shape == (1, anchors * 80, -(-64 // s), -(-96 // s))
        np.testing.assert_allclose(got[f"cls_score_s{s}"], ref_cls.numpy(), atol=1e-4, rtol=1e-3)
        np.testing.assert_allclose(got[f"bbox_delta_s{s}"], ref_box.numpy(), atol=1e-4, rtol=1e-3)
    report = json.loads((out / "det.json").read_text())
    assert all(o["passed"] for o in report["outputs"]) and report["post_processing"].startswith("none")
    # the same rule as cdarts-export: the tolerance widens by PyTorch's own float32 noise
    assert all("torch_fp32_noise" in o for o in report["outputs"])
    assert "4 x torch_fp32_noise" in report["parity_tolerance"]["rule"]


def test_segmentor_exports_logits_at_input_size(tmp_path):
    config = CONFIGS / "fasterseg_cdarts-b_cityscapes-1024x2048.py"
    options = {"model.backbone.init_cfg": None, "model.decode_head.norm_cfg.type": "BN"}
    model, ckpt = _model_and_checkpoint(config, tmp_path, options)
    out = tmp_path / "out"
    rc = export_main([str(config), "--checkpoint", str(ckpt), "--input-size", "64x128", "--out", str(out),
                      "--name", "seg", "--cfg-options", "model.backbone.init_cfg=None",
                      "model.decode_head.norm_cfg.type=BN"])
    assert rc == 0
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 128)).astype(np.float32)
    got = _ort(out / "seg.onnx", x)["seg_logits"]
    with torch.no_grad():
        # mmseg's own inference path up to the logits (no argmax).
        ref = model.encode_decode(torch.from_numpy(x), [dict(img_shape=(64, 128))])
    assert got.shape == (1, 19, 64, 128)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-4, rtol=1e-3)


def test_an_earlier_export_and_the_inputs_are_never_replaced_unasked(tmp_path, capsys):
    config = CONFIGS / "fasterseg_cdarts-b_cityscapes-1024x2048.py"
    options = {"model.backbone.init_cfg": None, "model.decode_head.norm_cfg.type": "BN"}
    _, ckpt = _model_and_checkpoint(config, tmp_path, options)
    out = tmp_path / "out"
    argv = [str(config), "--checkpoint", str(ckpt), "--input-size", "32x64", "--out", str(out), "--name", "seg",
            "--cfg-options", "model.backbone.init_cfg=None", "model.decode_head.norm_cfg.type=BN"]
    assert export_main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    assert export_main(argv) == 2  # refused before the model is built
    err = capsys.readouterr().err.strip()
    assert "already holds seg." in err and "--overwrite" in err and "\n" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # an output named like the checkpoint it reads: refused even with --overwrite
    clash = [str(config), "--checkpoint", str(ckpt), "--out", str(tmp_path), "--name", "model", "--overwrite"]
    assert export_main(clash) == 2
    assert "which is the input" in capsys.readouterr().err

    assert export_main([*argv, "--overwrite"]) == 0
    assert set(p.name for p in out.iterdir()) == set(before)


def test_export_refuses_unsafe_checkpoint_and_writes_nothing(tmp_path, capsys):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    bad = tmp_path / "bad.pth"
    bad.write_bytes(pickle.dumps({"state_dict": {}, "x": Payload()}))
    out = tmp_path / "out"
    rc = export_main([str(CONFIGS / "retinanet_cdarts-a_fpn_1x_coco.py"), "--checkpoint", str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot be loaded safely" in err and "pickled Python objects" in err
    assert "unpickled!" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing created before the inputs are known to be usable
    rc = export_main(["no/such/config.py", "--out", str(out)])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_get_flops_counts_every_part(tmp_path):
    import subprocess
    import sys

    from backbones.complexity import count_macs
    from downstream.mm_backbone import CDARTSBackbone

    repo = CONFIGS.parents[1]
    out = tmp_path / "flops.json"
    proc = subprocess.run(
        [sys.executable, "tools/get_flops.py", str(CONFIGS / "retinanet_cdarts-a_fpn_1x_coco.py"), "--shape", "128",
         "--json", str(out), "--cfg-options", "model.backbone.init_cfg=None"],
        cwd=repo, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["parts"]) == {"backbone", "neck", "bbox_head"}
    assert result["multiply_adds"] >= sum(p["multiply_adds"] for p in result["parts"].values()) * 0.999
    # The backbone part agrees with the project's own multiply-add counter on the same network
    # (mmengine also counts BN/pooling elements, hence the small tolerance).
    body = CDARTSBackbone("cdarts_a", out_indices=(1, 2, 3, 4)).body
    plain = count_macs(body, (128, 128))
    assert plain <= result["parts"]["backbone"]["multiply_adds"] <= plain * 1.1
    assert result["params"] == sum(p["params"] for p in result["parts"].values())


class _ScaledOutputs(torch.nn.Module):
    """A detector graph whose every output is 1% off: what a wrong artifact looks like to the check."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor):
        return tuple(o * 1.01 for o in self.inner(x))


def test_detector_export_refuses_a_wrong_artifact(tmp_path, monkeypatch, capsys):
    from cdarts_deploy.deploy import pipeline

    real_export = pipeline.export_onnx
    monkeypatch.setattr(pipeline, "export_onnx",
                        lambda model, path, *a, **k: real_export(_ScaledOutputs(model), path, *a, **k))
    config = CONFIGS / "retinanet_cdarts-b_fpn_1x_coco.py"
    _, ckpt = _model_and_checkpoint(config, tmp_path, {"model.backbone.init_cfg": None})
    out = tmp_path / "out"
    rc = export_main([str(config), "--checkpoint", str(ckpt), "--input-size", "64x96", "--out", str(out),
                      "--name", "det", "--raw", "--cfg-options", "model.backbone.init_cfg=None"])
    assert rc == 1
    assert "differs from PyTorch" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
