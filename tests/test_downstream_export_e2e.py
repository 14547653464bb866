"""cdarts-export-mm end to end: a RetinaNet trained for a few iterations on the tiny COCO set, exported with
decoding and NMS in the graph, checked against mmdet's own predict through the sidecar's recipe; wrong
artifacts refused; the segmentor's argmax; bad input.

The head's classifier starts from a wider initialisation (std 0.5, prior 0.3) than mmdet's RetinaNet
(std 0.01, prior 0.01): after a few iterations the default one scores every box 0.0100 +- 1e-5, where the
order of equal scores, not the export, decides which boxes are kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from downstream.synthetic_data import make_tiny_coco

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "downstream" / "configs"
DET_CONFIG = str(CONFIGS / "retinanet_cdarts-a_fpn_1x_coco.py")
SEG_CONFIG = str(CONFIGS / "fasterseg_cdarts-b_cityscapes-1024x2048.py")
# the test images are 64 x 64: the test resize keeps them as they are (scale factor 1)
DET_OPTIONS = ["model.backbone.init_cfg=None", "test_dataloader.dataset.pipeline.1.scale=(64,64)"]
WIDE_CLASSIFIER = ["model.bbox_head.init_cfg.type=Normal", "model.bbox_head.init_cfg.layer=Conv2d",
                   "model.bbox_head.init_cfg.std=0.01", "model.bbox_head.init_cfg.override.type=Normal",
                   "model.bbox_head.init_cfg.override.name=retina_cls", "model.bbox_head.init_cfg.override.std=0.5",
                   "model.bbox_head.init_cfg.override.bias_prob=0.3"]


def _options(items: list[str]) -> dict:
    from mmengine.config import DictAction

    return {k: DictAction._parse_iterable(v) for k, v in (i.split("=", 1) for i in items)}


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    from mmdet.datasets import CocoDataset

    return make_tiny_coco(tmp_path_factory.mktemp("coco"), splits={"train": 4, "val": 2}, size=(64, 64),
                          category_names=CocoDataset.METAINFO["classes"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, coco) -> Path:
    """tools/train.py: 3 epochs of 2 iterations; epoch_1.pth and epoch_2.pth are two different checkpoints."""
    work = tmp_path_factory.mktemp("det_work")
    opts = []
    for kind in ("train", "val", "test"):
        opts += [f"{kind}_dataloader.dataset.data_root={coco}/", f"{kind}_dataloader.num_workers=0"]
    ann = coco / "annotations" / "instances_val2017.json"
    opts += ["train_dataloader.batch_size=2", "train_dataloader.dataset.pipeline.2.scale=(64,64)",
             "val_dataloader.dataset.pipeline.1.scale=(64,64)", "test_dataloader.dataset.pipeline.1.scale=(64,64)",
             f"val_evaluator.ann_file={ann}", f"test_evaluator.ann_file={ann}", "model.backbone.init_cfg=None",
             "train_cfg.max_epochs=2", "train_cfg.val_interval=10", *WIDE_CLASSIFIER]
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "tools/train.py", DET_CONFIG, "--work-dir", str(work), "--cfg-options",
                           *opts], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work


@pytest.fixture(scope="module")
def check_images(tmp_path_factory, coco) -> Path:
    """The tiny set's val images (64 x 64) and one 100 x 80 image (resized to 64 x 51, then padded)."""
    import cv2

    from downstream.export_cli import generated_images

    folder = tmp_path_factory.mktemp("check")
    for i, path in enumerate(sorted((coco / "val2017").iterdir())):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.imread(str(path)))
    cv2.imwrite(str(folder / "wide.png"), generated_images(1, (80, 100), seed=5)[0])
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained, check_images):
    from downstream.export_cli import main as export_main

    out = tmp_path_factory.mktemp("e2e")
    rc = export_main([DET_CONFIG, "--checkpoint", str(trained / "epoch_2.pth"), "--input-size", "64x64",
                      "--max-size", "256x256", "--max-batch", "4", "--check-images", str(check_images),
                      "--out", str(out), "--name", "det", "--cfg-options", *DET_OPTIONS])
    assert rc == 0
    return out


def _model(checkpoint: Path, extra: list[str] = ()):
    from downstream.export_graphs import build_with_config

    return build_with_config(DET_CONFIG, _options(DET_OPTIONS + list(extra)), str(checkpoint))


def _images(folder: Path) -> list[np.ndarray]:
    import cv2

    return [cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))]


def test_end_to_end_detector_matches_mmdet(exported, trained, check_images):
    from cdarts_deploy.deploy import ort
    from downstream import detection_parity, runtime_recipe, sidecar

    proto = onnx.load(str(exported / "det.onnx"))
    assert "NonMaxSuppression" in {n.op_type for n in proto.graph.node}
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims == {"input": ["batch", 3, "height", "width"], "image_size": ["batch", 2], "score_thr": [1]}
    outs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    assert outs == {"dets": ["batch", 100, 5], "labels": ["batch", 100]}

    report = json.loads((exported / "det.json").read_text())
    check = report["checks"]["mmdet_images"]
    assert check["passed"] and check["images_from"] == "--check-images" and len(check["images"]) == 3
    assert check["candidates_compared"] >= 3 * 1000 and check["detections_compared_at_0"] >= 3 * 90
    assert check["max_score_diff"] < 1e-5 and check["max_box_diff"] < 1e-3
    assert all(r["nms_at_0.05"]["detections"] > 0 for r in check["images"])  # the default threshold keeps some
    head = report["checks"]["graph_vs_mmdet_head"]
    assert all(v["passed"] and v["detections_compared_at_0"] > 0 for v in head.values())

    doc = sidecar.read(exported / "det.sidecar.json")
    assert doc["task"] == "detection" and doc["input"]["batch"] == [1, 4] and doc["input"]["multiple_of"] == 32
    assert doc["preprocessing"]["channel_order"] == "RGB" and doc["preprocessing"]["mean"][0] == 123.675
    assert doc["preprocessing"]["resize"]["keep_ratio"] and doc["preprocessing"]["pad"]["size_divisor"] == 32
    assert doc["image_size"]["optional"] and doc["score_thr"]["optional"]
    post = doc["postprocessing"]
    assert (post["score_thr"], post["iou_thr"], post["max_per_img"], post["nms_pre"]) == (0.05, 0.5, 100, 1000)
    assert len(doc["classes"]) == 80

    # dynamic batch: the two 64 x 64 images in one run of the file, against mmdet's head on the same batch
    model, _ = _model(trained / "epoch_2.pth")
    images = _images(check_images)[:2]
    batch, metas = runtime_recipe.preprocess(images, doc["preprocessing"])
    probe = detection_parity.probe(exported / "det.onnx")
    sizes = np.asarray([m.resized for m in metas], np.float32)
    entry, failures = detection_parity.verify_inputs(model, probe, batch, sizes)
    assert not failures and entry["detections_compared_at_0"] >= 2 * 90
    # as mmdeploy's files are called: the image alone (its boxes clipped to the input, here the image's size)
    session = ort.session(exported / "det.onnx")
    alone = session.run(None, {"input": batch})
    fed = session.run(None, {"input": batch, "image_size": sizes})
    assert (alone[1] >= 0).sum() > 0
    np.testing.assert_array_equal(alone[0], fed[0])
    np.testing.assert_array_equal(alone[1], fed[1])
    assert sum(len(d["scores"]) for d in runtime_recipe.detect(session, doc, images)) == (fed[1] >= 0).sum()
    # TensorRT's side: the optional inputs are initializers (constants there), so the one profile is the image's
    from cdarts_deploy.deploy import trt

    inputs = trt.onnx_inputs(exported / "det.onnx")
    assert inputs == [("input", (-1, 3, -1, -1))]
    assert trt.plan_profiles(inputs, (64, 64), 1, 1, 4) == [{"input": [[1, 3, 64, 64], [1, 3, 64, 64],
                                                                       [4, 3, 64, 64]]}]


def _export_e2e(graph, path: Path, score_thr: float = 0.05) -> None:
    from downstream.export_graphs import export_dynamic

    export_dynamic(graph.eval(), path, (torch.randn(1, 3, 64, 64), torch.tensor([[64.0, 64.0]]),
                                        torch.tensor([score_thr])), 18, graph.input_names, graph.output_names,
                   defaults={"image_size": np.zeros((1, 2), np.float32),
                             "score_thr": np.asarray([score_thr], np.float32)})


class _Nothing(torch.nn.Module):
    """An end-to-end graph whose candidates all score -1: it never detects anything."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner
        self.input_names, self.output_names, self.post = inner.input_names, inner.output_names, inner.post

    def forward(self, x, image_size, score_thr):
        real = self.inner.candidates
        self.inner.candidates = lambda *a: (lambda b, s: (b, s * 0 - 1))(*real(*a))
        try:
            return self.inner(x, image_size, score_thr)
        finally:
            self.inner.candidates = real


def test_parity_check_refuses_wrong_artifacts(exported, trained, check_images, tmp_path):
    from downstream import detection_parity, sidecar
    from downstream.end_to_end import EndToEndDetector

    doc = sidecar.read(exported / "det.sidecar.json")
    images = _images(check_images)
    probe = detection_parity.probe(exported / "det.onnx")
    # the artifact of epoch 2 against the model of epoch 1
    model, cfg = _model(trained / "epoch_1.pth")
    entry, failures = detection_parity.verify(model, cfg, probe, doc, images)
    assert failures and not entry["passed"] and "differs from mmdet" in failures[0]
    assert "is none of mmdet's 1000 best pairs" in " ".join(failures)

    model, cfg = _model(trained / "epoch_2.pth")
    post = EndToEndDetector(model).post
    wrong = {
        # another NMS IoU threshold baked in: the detections are not NMS of its own candidates
        "iou": (EndToEndDetector(model, dataclasses.replace(post, iou_thr=0.3)), 0.05, "differ from class-wise NMS"),
        # another default score threshold than the model's test_cfg
        "score": (EndToEndDetector(model), 0.3, "default score_thr [0.30000001192092896] is not the model's 0.05"),
        # fewer candidates per level than the model's nms_pre
        "nms_pre": (EndToEndDetector(model, dataclasses.replace(post, nms_pre=500)), 0.05, "(nms_pre)"),
        # a graph that outputs nothing
        "nothing": (_Nothing(EndToEndDetector(model)), 0.05, "best pairs are no candidate"),
    }
    for name, (graph, thr, message) in wrong.items():
        _export_e2e(graph, tmp_path / f"{name}.onnx", thr)
        entry, failures = detection_parity.verify(model, cfg, detection_parity.probe(tmp_path / f"{name}.onnx"),
                                                  doc, images)
        assert failures and not entry["passed"] and message in " ".join(failures), (name, failures[:2])
    # and the right one passes on the same images
    assert not detection_parity.verify(model, cfg, probe, doc, images)[1]
    # a sidecar whose recipe gives another input than mmdet's pipeline (BGR instead of RGB)
    bgr = {**doc, "preprocessing": {**doc["preprocessing"], "channel_order": "BGR"}}
    failures = detection_parity.verify(model, cfg, probe, bgr, images)[1]
    assert failures and "recipe's input" in failures[0]


def test_command_refuses_a_wrong_graph_and_writes_nothing(trained, monkeypatch, capsys, tmp_path):
    from downstream import export_graphs
    from downstream.export_cli import main as export_main

    real = export_graphs.export_dynamic

    def wrong_iou(graph, *args, **kwargs):
        graph.post = dataclasses.replace(graph.post, iou_thr=0.3)  # the file suppresses more than the model
        try:
            return real(graph, *args, **kwargs)
        finally:
            graph.post = dataclasses.replace(graph.post, iou_thr=0.5)

    monkeypatch.setattr(export_graphs, "export_dynamic", wrong_iou)
    out = tmp_path / "out"
    rc = export_main([DET_CONFIG, "--checkpoint", str(trained / "epoch_2.pth"), "--input-size", "64x64",
                      "--max-size", "128x128", "--out", str(out), "--cfg-options", *DET_OPTIONS])
    err = capsys.readouterr().err
    assert rc == 1 and "differs from mmdet's head" in err and "no files written" in err
    assert not any(out.iterdir())


def test_runtime_preprocessing_equals_mmdet_pipeline():
    """The sidecar recipe (numpy + OpenCV) gives the tensor mmdet's pipeline and data preprocessor give."""
    from mmcv.transforms import Compose
    from mmengine.registry import MODELS, DefaultScope

    from downstream import runtime_recipe, sidecar
    from downstream.export_cli import generated_images
    from downstream.runner_setup import load_config

    cfg = load_config(DET_CONFIG)  # the real test scale, 1333 x 800
    pre = sidecar.preprocessing(cfg)
    image = generated_images(1, (97, 131), seed=1)[0]
    batch, metas = runtime_recipe.preprocess([image], pre)
    with DefaultScope.overwrite_default_scope("mmdet"):
        steps = [dict(type="mmdet.LoadImageFromNDArray")] + [s for s in cfg.test_dataloader.dataset.pipeline[1:]
                                                              if s["type"] != "LoadAnnotations"]
        data = Compose(steps)(dict(img=image, img_id=0))
        preprocessor = MODELS.build(cfg.model.data_preprocessor)
        ref = preprocessor(dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]]), False)
    meta = ref["data_samples"][0].metainfo
    assert metas[0].resized == tuple(meta["img_shape"]) and metas[0].scale == tuple(meta["scale_factor"])
    assert batch.shape == tuple(ref["inputs"].shape) and batch.shape[2] % 32 == 0
    np.testing.assert_array_equal(batch, ref["inputs"].numpy())


def test_segmentor_argmax_has_dynamic_shapes(tmp_path):
    from cdarts_deploy.deploy import ort
    from downstream import sidecar
    from downstream.export_cli import main as export_main
    from downstream.export_graphs import build_with_config

    opts = ["model.backbone.init_cfg=None", "model.decode_head.norm_cfg.type=BN"]
    torch.manual_seed(0)
    model, _ = build_with_config(SEG_CONFIG, _options(opts))
    ckpt = tmp_path / "seg.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    out = tmp_path / "out"
    rc = export_main([SEG_CONFIG, "--checkpoint", str(ckpt), "--argmax", "--input-size", "64x128", "--max-size",
                      "256x512", "--out", str(out), "--name", "seg", "--cfg-options", *opts])
    assert rc == 0
    doc = sidecar.read(out / "seg.sidecar.json")
    assert doc["task"] == "segmentation" and doc["postprocessing"]["argmax"] and "labels" in doc["outputs"]
    x = np.random.default_rng(3).standard_normal((2, 3, 96, 160)).astype(np.float32)
    got = ort.run(ort.session(out / "seg.onnx"), x)[0]
    with torch.no_grad():
        ref = model.encode_decode(torch.from_numpy(x), [dict(img_shape=(96, 160))] * 2).argmax(1).numpy()
    assert got.shape == (2, 96, 160) and got.dtype == np.int64
    assert (got == ref).mean() > 0.999


@pytest.mark.parametrize("argv, message", [
    ([SEG_CONFIG, "--raw", "--cfg-options", "model.backbone.init_cfg=None", "model.decode_head.norm_cfg.type=BN"],
     "--raw applies to detectors"),
    ([DET_CONFIG, "--input-size", "50x64", "--cfg-options", *DET_OPTIONS], "multiples of 32"),
    ([DET_CONFIG, "--input-size", "64x64", "--check-images", "no/such/dir", "--cfg-options", *DET_OPTIONS],
     "not found"),
    ([DET_CONFIG, "--input-size", "64x64", "--opset", "9", "--cfg-options", *DET_OPTIONS], "--opset 9"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    from downstream.export_cli import main as export_main

    out = tmp_path / "out"
    rc = export_main(argv + ["--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cdarts-export-mm: error")]
    assert rc == 2 and len(err) == 1 and message in err[0]
    assert not out.exists()  # refused before anything was created


def _level(boxes, scores, labels, cut=-np.inf) -> dict:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return {"boxes": boxes, "scores": np.asarray(scores, np.float64), "labels": np.asarray(labels),
            "valid": np.ones(len(boxes), bool), "cut": cut}


def _class_scores(scores, labels, classes=3) -> np.ndarray:
    out = np.full((classes, len(scores)), -1, np.float32)
    out[np.asarray(labels), np.arange(len(scores))] = scores
    return out


def test_candidate_rule():
    from downstream.detection_parity import compare_candidates

    # one level, nms_pre 3: mmdet's pairs (four; the third best is the cut)
    ref = [_level([[0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 30], [5, 5, 9, 9]], [0.9, 0.5, 0.2, 0.19995],
                  [1, 2, 1, 0], cut=0.2)]
    boxes = np.asarray([[20, 20, 40, 40], [0, 0, 10, 10], [50, 0, 60, 30]], np.float32)
    entry, failures = compare_candidates(ref, boxes, _class_scores([0.5, 0.9, 0.2], [2, 1, 1]), 3)
    assert not failures and entry["compared"] == 3 and entry["missing"] == 0  # the order of slots is free
    # the pair at the cut (0.2 vs 0.19995) may be either side of it: a tolerance on values, not a count
    near = np.r_[boxes[:2], [[5, 5, 9, 9]]].astype(np.float32)
    assert not compare_candidates(ref, near, _class_scores([0.5, 0.9, 0.19995], [2, 1, 0]), 3)[1]
    # a rotated set of scores, a moved box, another label, a missing confident pair, nothing at all: refused
    for bad in (_class_scores([0.9, 0.2, 0.5], [2, 1, 1]), _class_scores([0.5, 0.9, 0.2], [2, 0, 1]),
                _class_scores([0.5, 0.9, -1], [2, 1, 1]), _class_scores([-1, -1, -1], [0, 0, 0])):
        assert compare_candidates(ref, boxes, bad, 3)[1]
    moved = boxes + np.float32([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0, 0, 0]])
    assert compare_candidates(ref, moved, _class_scores([0.5, 0.9, 0.2], [2, 1, 1]), 3)[1]
    assert "nms_pre" in compare_candidates(ref, boxes[:2], _class_scores([0.5, 0.9], [2, 1]), 3)[1][0]


def test_nms_rule_is_exact_except_float_ties():
    from downstream.detection_parity import ParityRule, _summary, compare_nms, reference_nms
    from downstream.end_to_end import PostProcessing

    post = PostProcessing(score_thr=0.05, iou_thr=0.5, max_per_img=4, nms_pre=10, min_bbox_size=-1)
    # class 1: the second box overlaps the first by exactly 1/2 (a float tie), the third by 1/3 (and the second
    # by 5/7); class 0: two boxes that overlap by 0.9
    boxes = np.asarray([[0, 0, 30, 10], [10, 0, 40, 10], [15, 0, 45, 10], [60, 60, 70, 70], [100, 100, 120, 120],
                        [101, 100, 121, 120]], np.float32)
    scores = _class_scores([0.9, 0.6, 0.5, 0.3, 0.8, 0.7], [1, 1, 1, 2, 0, 0])
    kept, loose = reference_nms(boxes, scores, 0.05, 0.5, 4, ParityRule().iou_eps)
    assert kept == [(1, 0), (0, 4), (1, 1), (2, 3)] and loose == {(1, 1), (1, 2), (2, 3)}

    def dets(rows):
        d = np.zeros((4, 5), np.float32)
        lab = np.full(4, -1, np.int64)
        for n, (c, m) in enumerate(rows):
            d[n, :4], d[n, 4], lab[n] = boxes[m], scores[c, m], c
        return d, lab

    # either fate of the tied box (and of what hangs on it) is right
    for rows in ([(1, 0), (0, 4), (1, 1), (2, 3)], [(1, 0), (0, 4), (1, 2), (2, 3)]):
        entry, failures = compare_nms(*dets(rows), boxes, scores, 0.05, post)
        assert not failures and entry["compared"] == 2
    # a confident detection missing, one kept that NMS suppresses, unsorted rows, nothing at all: refused
    for rows in ([(0, 4), (1, 1), (2, 3)], [(1, 0), (0, 4), (0, 5), (1, 1)], [(0, 4), (1, 0), (1, 1), (2, 3)], []):
        assert compare_nms(*dets(rows), boxes, scores, 0.05, post)[1], rows
    other = dets([(1, 0), (0, 4), (1, 1), (2, 3)])
    other[0][3, 4] = 0.31
    assert "none of the NMS inputs" in compare_nms(*other, boxes, scores, 0.05, post)[1][0]
    # comparing nothing is a failure, not a note
    assert "proves nothing" in _summary([{"compared": 0, "nms_at_0": {"compared": 0}}], [])[1][0]
    assert "proves nothing" in _summary([{"compared": 5, "nms_at_0": {"compared": 0}}], [])[1][0]


def test_raw_export_keeps_head_outputs_and_writes_the_sidecar(trained, tmp_path):
    from downstream import sidecar
    from downstream.export_cli import main as export_main

    out = tmp_path / "raw"
    rc = export_main([DET_CONFIG, "--checkpoint", str(trained / "epoch_2.pth"), "--raw", "--input-size", "64x64",
                      "--out", str(out), "--name", "raw", "--cfg-options", *DET_OPTIONS])
    assert rc == 0
    proto = onnx.load(str(out / "raw.onnx"))
    assert not {n.op_type for n in proto.graph.node} & {"NonMaxSuppression", "TopK"}
    assert [o.name for o in proto.graph.output][:2] == ["cls_score_s8", "cls_score_s16"]
    doc = sidecar.read(out / "raw.sidecar.json")
    assert doc["task"] == "detection-raw" and not doc["postprocessing"]["in_graph"]
    assert doc["postprocessing"]["test_cfg"]["nms_pre"] == 1000 and doc["preprocessing"]["pad"]["size_divisor"] == 32
