"""``cdarts-export-mm``: export a detector or segmentor from an mmdet/mmseg config to verified ONNX.

    cdarts-export-mm downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py \\
        --checkpoint work_dirs/retinanet/epoch_12.pth --input-size 800x1344 --out out/

Detectors are exported end to end: box decoding and class-wise NMS (ONNX NonMaxSuppression) are in the
graph, the input is ``input`` (N x 3 x H x W), with two optional inputs, ``image_size`` (N x 2: each image's
height and width before padding; default the input's own) and ``score_thr`` (default the test config's), the
outputs ``dets`` (N x K x 5: x1, y1, x2, y2, score) and ``labels`` (N x K, -1 past the detections), and
batch, height and width are dynamic within the ranges the sidecar declares.  The export is checked against
mmdet's own dense head: the file's pre-NMS candidates against mmdet's decoded pairs and its detections
against NMS of its own candidates, on images (``--check-images``, or generated ones) through the sidecar's
recipe and on random input at two shapes (:mod:`downstream.detection_parity`).  ``--raw`` exports the raw per-level head
outputs instead (static 1 x 3 x H x W, no decoding or NMS).  Segmentors export the logits at the input size,
or with ``--argmax`` the per-pixel class (N x H x W int64), with dynamic shapes.
Writes ``<name>.onnx``, ``<name>.json`` (the checks, versions) and ``<name>.sidecar.json`` (preprocessing,
post-processing settings, outputs); nothing is written unless every check passes.
Exit status: 0 success, 1 check failed, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from cdarts_deploy.commands.args import (
    OneLineParser,
    UsageError,
    add_out_dir_option,
    add_overwrite_option,
    parse_size,
    positive_int,
    prepare_out_dir,
    run_main,
)
from cdarts_deploy.commands.outputs import refuse_replacing
from cdarts_deploy.data.image_files import IMAGE_SUFFIXES
from cdarts_deploy.data.image_reader import folder_files
from cdarts_deploy.deploy import ort, parity
from cdarts_deploy.deploy.model_spec import random_batch
from cdarts_deploy.deploy.pipeline import OnnxExport, Staging, export_verified, publish_with_report, verify
from cdarts_deploy.deploy.versions import library_versions
from downstream import detection_parity, export_graphs, sidecar
from downstream.end_to_end import EndToEndDetector, SegmentorLabels
from downstream.export_graphs import build_with_config, graph_for
from downstream.runtime_recipe import preprocess

if TYPE_CHECKING:
    from cdarts_deploy.deploy.pipeline import Compare

PROG = "cdarts-export-mm"
#: Opsets of the end-to-end export: ONNX NonMaxSuppression (11) to the tracing exporter's newest (20).
MIN_OPSET, MAX_OPSET = 11, 20


def build_parser() -> argparse.ArgumentParser:
    from downstream.runner_setup import CfgOptionsAction

    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="mmdet/mmseg config, e.g. downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py")
    p.add_argument("--checkpoint", help="checkpoint from tools/train.py (default: the config's initial weights)")
    p.add_argument("--input-size", type=parse_size, default=(512, 512),
                   help="HxW of the example input the graph is traced at (default 512x512)")
    p.add_argument("--max-batch", type=positive_int, default=8, help="largest batch the sidecar declares (default 8)")
    p.add_argument("--min-size", type=parse_size, help="smallest HxW the sidecar declares (default 32x32)")
    p.add_argument("--max-size", type=parse_size,
                   help="largest HxW the sidecar declares (default: the test pipeline's resize scale, padded)")
    p.add_argument("--check-images", nargs="+", metavar="PATH",
                   help="image files or folders for the check against mmdet's predict (default: 2 generated images "
                        "of --input-size)")
    p.add_argument("--raw", action="store_true",
                   help="detectors: export the raw per-level head outputs (no decoding, no NMS, static shape)")
    p.add_argument("--argmax", action="store_true", help="segmentors: output the per-pixel class instead of logits")
    add_out_dir_option(p, default=".")
    add_overwrite_option(p)
    p.add_argument("--name", help="output file stem (default: the config's name)")
    p.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, help="override config entries: key=value")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ModuleNotFoundError as exc:  # the parser takes mmengine's config options
        print(f"{PROG}: error: {exc.name} is not installed; {PROG} needs the mm extra: "
              "pip install 'cdarts-deploy[mm]' (or make test, which installs it)", file=sys.stderr)
        return 2
    return run_main(PROG, parser, run, argv)


def _log(message: str) -> None:
    print(f"[{PROG}] {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    name = args.name or Path(args.config).stem
    refuse_replacing(args.out, name, [args.config, args.checkpoint, *(args.check_images or [])], args.overwrite)
    start = time.perf_counter()
    model, cfg = build_with_config(args.config, args.cfg_options, args.checkpoint)
    build_seconds = round(time.perf_counter() - start, 3)
    graph = graph_for(model)
    detector = hasattr(graph, "level_names")
    if (args.raw and not detector) or (args.argmax and detector):
        raise UsageError("--raw applies to detectors, --argmax to segmentors")
    out_dir = Path(args.out)  # created by each path once every input has been checked
    report = {"config": str(args.config), "checkpoint": args.checkpoint, "model": type(model).__name__,
              "seconds": {"build": build_seconds}}
    return (_run_raw(args, graph, cfg, out_dir, name, report) if args.raw
            else _run_end_to_end(args, model, cfg, graph, detector, out_dir, name, report))


# ----- raw per-level detector outputs ------------------------------------------------------------------


def _run_raw(args, graph, cfg, out_dir: Path, name: str, report: dict) -> int:
    height, width = args.input_size
    _log(f"exporting the raw head outputs of {report['model']} of {args.config} at {height}x{width}")
    export = OnnxExport((1, 3, height, width), args.opset, dynamic_batch=False, exporter="dynamo",
                        output_names=graph.output_names)
    report = {**report, "input": {"name": "input", "shape": [1, 3, height, width]},
              "post_processing": "none (raw per-level outputs; decode and NMS downstream)"}
    post = graph.detector.bbox_head.test_cfg
    doc = sidecar.build(
        "detection-raw", f"{name}.onnx", cfg, {"layout": "NCHW", "dtype": "float32", "batch": [1, 1],
                                              "height": [height, height], "width": [width, width]},
        outputs={n: {"shape": "N x anchors*classes x H/s x W/s" if n.startswith("cls") else "N x anchors*4 x H/s x W/s"}
                 for n in graph.output_names},
        postprocessing={"in_graph": False, "test_cfg": json.loads(json.dumps(dict(post), default=str))},
        to_original={"rule": "decode, NMS and rescale as the model's head does"}, classes=_classes(cfg))
    out_dir = prepare_out_dir(out_dir)  # after every input check: a refusal leaves no folder behind
    sidecar_final = out_dir / f"{name}.sidecar.json"

    def write_sidecar(verified, staging):
        staging.temp(sidecar_final).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return {"sidecar": sidecar_final.name}, []

    result = export_verified(graph, out_dir, name, export, {"random b1": random_batch(1, (height, width), seed=0)},
                             report, parity_key="outputs", artifacts=write_sidecar, log=_log)
    if not result.passed:
        print(f"{PROG}: error: {result.failures[0]}; no files written", file=sys.stderr)
        return 1
    rows = result.report["outputs"]
    _log(f"wrote {out_dir / (name + '.onnx')} ({len(rows)} outputs, max abs diff vs PyTorch "
         f"{max(r['max_abs'] for r in rows):.2e})")
    return 0


# ----- end-to-end detector / segmentor -----------------------------------------------------------------


def _classes(cfg: Any) -> list[str] | None:
    meta = cfg.test_dataloader.dataset.get("metainfo") or {}
    if meta.get("classes"):
        return list(meta["classes"])
    try:
        from mmengine.registry import DATASETS

        kind = str(cfg.test_dataloader.dataset.type)
        cls = DATASETS.get(kind if "." in kind else f"{cfg.get('default_scope', 'mmdet')}.{kind}")
        return list(cls.METAINFO["classes"]) if cls is not None else None
    except Exception:  # a dataset type that cannot be resolved only costs the class names
        return None


def _ranges(args, pre: dict) -> dict:
    """The declared input ranges; the example size must lie within them."""
    multiple = int(pre["pad"]["size_divisor"])
    scale = pre["resize"]["scale"]
    padded = -(-max(scale) // multiple) * multiple
    lo = args.min_size or (32, 32)
    hi = args.max_size or ((padded, padded) if pre["resize"]["keep_ratio"] else
                           (-(-scale[1] // multiple) * multiple, -(-scale[0] // multiple) * multiple))
    h, w = args.input_size
    for what, (a, b) in (("--min-size", lo), ("--max-size", hi), ("--input-size", (h, w))):
        if multiple > 1 and (a % multiple or b % multiple):
            raise UsageError(f"{what} {a}x{b}: height and width must be multiples of {multiple} (the config pads "
                             f"to a multiple of {multiple})")
    if not (lo[0] <= h <= hi[0] and lo[1] <= w <= hi[1]):
        raise UsageError(f"--input-size {h}x{w} lies outside the declared range {lo[0]}x{lo[1]} .. {hi[0]}x{hi[1]}")
    return {"layout": "NCHW", "dtype": "float32", "batch": [1, args.max_batch], "height": [lo[0], hi[0]],
            "width": [lo[1], hi[1]], "multiple_of": multiple}


def _second_shape(ranges: dict, h: int, w: int) -> tuple[int, int, int]:
    """A second check shape within the ranges: batch 2 (if declared) and another height and width."""
    step = max(ranges["multiple_of"], 1) * 2
    h2 = h - step if h - step >= ranges["height"][0] else min(h + step, ranges["height"][1])
    w2 = w + step if w + step <= ranges["width"][1] else max(w - step, ranges["width"][0])
    return min(2, ranges["batch"][1]), h2, w2


def _read_images(paths: Sequence[str], pre: dict, ranges: dict) -> list[np.ndarray]:
    """Decoded check images (BGR, as OpenCV and mmcv read them), each within the declared input ranges
    once the sidecar's resize and padding are applied."""
    import cv2

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += folder_files(p)  # no hidden or macOS ._ files
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"--check-images {p} not found; pass image files or folders")
    if not files:
        raise UsageError(f"--check-images {' '.join(paths)} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise UsageError(f"--check-images {f} is not a readable image")
        h, w = preprocess([img], pre)[0].shape[2:]
        if not (ranges["height"][0] <= h <= ranges["height"][1] and ranges["width"][0] <= w <= ranges["width"][1]):
            raise UsageError(f"--check-images {f} becomes {h}x{w} after the resize rule, outside the declared "
                             f"range {ranges['height'][0]}x{ranges['width'][0]} .. {ranges['height'][1]}x"
                             f"{ranges['width'][1]}; widen --min-size/--max-size or change the test scale")
        images.append(img)
    return images


def generated_images(count: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Dark noise with a few bright rectangles, BGR uint8: something for a detector to respond to."""
    rng = np.random.default_rng(seed)
    h, w = size
    images = []
    for _ in range(count):
        img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        for _ in range(3):
            bw, bh = int(rng.integers(w // 4, w // 2 + 1)), int(rng.integers(h // 4, h // 2 + 1))
            x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            img[y:y + bh, x:x + bw] = rng.integers(80, 256, size=3, dtype=np.uint8)
        images.append(img)
    return images


def _run_end_to_end(args, model, cfg, graph, detector: bool, out_dir: Path, name: str, report: dict) -> int:

    if args.check_images and not detector:
        raise UsageError("--check-images applies to detectors (the check against mmdet's predict)")
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise UsageError(f"--opset {args.opset}: the end-to-end export supports opsets {MIN_OPSET} to {MAX_OPSET} "
                         "(NonMaxSuppression needs 11; the tracing exporter goes up to 20)")
    pre = sidecar.preprocessing(cfg)
    ranges = _ranges(args, pre)
    height, width = args.input_size
    images = _read_images(args.check_images, pre, ranges) if args.check_images else None
    if detector:
        e2e = EndToEndDetector(model).eval()
        post = {"in_graph": True, **e2e.post.as_dict(), "nms": "class-wise", "scores": "sigmoid",
                "boxes": "DeltaXYWH decoding, clipped to image_size (default: the input's size)"}
        k = e2e.post.max_per_img
        outputs = {"dets": {"shape": ["N", k, 5], "dtype": "float32", "columns": ["x1", "y1", "x2", "y2", "score"],
                            "units": "input pixels", "order": "score, descending",
                            "padding": "rows past an image's detections are zeros"},
                   "labels": {"shape": ["N", k], "dtype": "int64", "padding": -1}}
        to_original = {"keep": "rows with label >= 0",
                       "clip": "x to [0, resized width], y to [0, resized height]",
                       "scale": "x / w_scale, y / h_scale (the resize rule's scale factors)"}
        spatial = None
        kind = "detection"
    else:
        e2e = (SegmentorLabels(graph) if args.argmax else graph).eval()
        post = {"in_graph": bool(args.argmax), "argmax": bool(args.argmax)}
        key = "labels" if args.argmax else "seg_logits"
        outputs = {key: {"shape": ["N", "H", "W"] if args.argmax else ["N", "classes", "H", "W"],
                         "dtype": "int64" if args.argmax else "float32"}}
        to_original = {"crop": "rows and columns of the resized image (drop padding)",
                       "resize": "to the original size: nearest for labels; bilinear for logits, then argmax"}
        spatial = {key: (1, 2) if args.argmax else (2, 3)}
        kind = "segmentation"
    names = list(e2e.output_names)
    doc = sidecar.build(kind, f"{name}.onnx", cfg, ranges, outputs=outputs, postprocessing=post,
                        to_original=to_original, classes=_classes(cfg))
    input_names = list(getattr(e2e, "input_names", ["input"]))
    if detector:
        doc["image_size"] = {"name": input_names[1], "shape": ["N", 2], "dtype": "float32", "optional": True,
                             "value": "height and width of each resized image before padding (boxes are clipped "
                                      "to it, as mmdet clips to img_shape); not fed, or a row that is not "
                                      "positive: the input's own height and width"}
        doc["score_thr"] = {"name": input_names[2], "shape": [1], "dtype": "float32", "optional": True,
                            "value": f"scores above it are kept (not fed: {e2e.post.score_thr}, the test config's)"}
    _log(f"exporting {report['model']} of {args.config} end to end (tracing exporter, opset {args.opset}, "
         f"example {height}x{width}, batch 1..{ranges['batch'][1]}, "
         f"height {ranges['height'][0]}..{ranges['height'][1]}, "
         f"width {ranges['width'][0]}..{ranges['width'][1]})")
    seconds = dict(report.pop("seconds"))
    example = (torch.randn(1, 3, height, width),) + ((torch.tensor([[height, width]], dtype=torch.float32),
                                                       torch.tensor([e2e.post.score_thr], dtype=torch.float32))
                                                      if detector else ())
    fixed = {"dets": {1: k, 2: 5}, "labels": {1: k}} if detector else None
    check_seconds: dict[str, float] = {}

    def export(path: Path) -> None:
        # the optional inputs' defaults, read when the file is written: the input's own size, the test score_thr
        defaults = ({"image_size": np.zeros((1, 2), np.float32),
                     "score_thr": np.asarray([e2e.post.score_thr], np.float32)} if detector else None)
        export_graphs.export_dynamic(e2e, path, example, args.opset, input_names, names, spatial, fixed, defaults)

    out_dir = prepare_out_dir(out_dir)  # after every input check: a refusal leaves no folder behind
    onnx_final = out_dir / f"{name}.onnx"
    with Staging() as staging:
        onnx_temp = staging.temp(onnx_final)
        compare = _end_to_end_checks(args, model, cfg, e2e, doc, images, detector, ranges, check_seconds, onnx_temp)
        verified = verify(onnx_temp, export, compare)
        if verified.failures:
            print(f"{PROG}: error: {verified.failures[0]}; no files written", file=sys.stderr)
            return 1
        seconds = {**seconds, "export": verified.seconds["export"], **check_seconds}
        full = {**report, "mode": "end-to-end" if detector else ("argmax" if args.argmax else "logits"),
                "input": ranges, "outputs": outputs, "postprocessing": post, "sidecar": f"{name}.sidecar.json",
                "opset": args.opset, "exporter": "torchscript (tracing)", "onnx_bytes": verified.path.stat().st_size,
                "checks": verified.rows, "seconds": seconds, "versions": library_versions()}
        staging.temp(out_dir / f"{name}.sidecar.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        publish_with_report(staging, out_dir / f"{name}.json", full, default=str)
    _log(f"wrote {onnx_final}, {name}.sidecar.json and {name}.json (export {seconds['export']:.1f} s)")
    return 0


def _end_to_end_checks(args, model, cfg, e2e, doc: dict, images: list[np.ndarray] | None, detector: bool,
                       ranges: dict, seconds: dict[str, float], onnx_path: Path) -> Compare:
    """The pipeline's comparison step for an end-to-end graph: a segmentor's file against the PyTorch graph at
    two shapes; a detector's against mmdet's dense head at two shapes, then on images through the sidecar's
    recipe (:mod:`downstream.detection_parity`)."""
    height, width = args.input_size

    def compare(session: Any) -> tuple[dict, list[str]]:
        checks: dict = {}
        start = time.perf_counter()
        n2, h2, w2 = _second_shape(ranges, height, width)
        rng = np.random.default_rng(0)
        shapes = {"random b1": (1, height, width), f"random b{n2} {h2}x{w2}": (n2, h2, w2)}
        inputs = {label: rng.standard_normal((n, 3, h, w)).astype(np.float32) for label, (n, h, w) in shapes.items()}
        if detector:
            probe = detection_parity.probe(onnx_path)
            if isinstance(probe, str):
                return checks, [f"the end-to-end graph cannot be checked: {probe}"]
            checks["graph_vs_mmdet_head"], failures = _graph_detections(model, probe, inputs)
        elif args.argmax:
            checks["graph_vs_pytorch"], failures = _graph_labels(e2e, session, inputs)
        else:
            rows = parity.compare_runtime(parity.TorchReference(e2e, inputs), lambda x: ort.run(session, x),
                                          list(e2e.output_names))
            checks["graph_vs_pytorch"], failures = rows, parity.failures(rows)
        seconds["graph_check"] = round(time.perf_counter() - start, 3)
        if detector and not failures:
            start = time.perf_counter()
            check_images = images if images is not None else generated_images(2, (height, width))
            entry, failures = detection_parity.verify(model, cfg, probe, doc, check_images)
            entry["images_from"] = "--check-images" if images is not None else "generated"
            checks["mmdet_images"] = entry
            seconds["images_check"] = round(time.perf_counter() - start, 3)
            _log(f"mmdet vs ONNX Runtime on {len(check_images)} images: {entry['candidates_compared']} pre-NMS "
                 f"candidates (max score diff {entry['max_score_diff'] or 0:.1e}, box diff "
                 f"{entry['max_box_diff'] or 0:.1e} px), {entry['detections_compared_at_0']} detections at "
                 "score_thr 0")
        return checks, failures

    return compare


def _graph_detections(model, probe: detection_parity.Probe, inputs: dict) -> tuple[dict, list[str]]:
    """The file against mmdet's dense head at every check shape: the first with only the image fed (the
    input's own size), the second giving each image a smaller valid size."""
    entries, failures = {}, []
    for label, x in inputs.items():
        sizes = None
        if label != next(iter(inputs)):
            sizes = np.tile(np.asarray([x.shape[2:]], np.float32), (x.shape[0], 1))
            sizes = sizes - np.float32(8) * np.arange(x.shape[0], dtype=np.float32)[:, None]
        entries[label], more = detection_parity.verify_inputs(model, probe, x, sizes)
        failures += [f"the file differs from mmdet's head on {label}: {m}" for m in more]
    return entries, failures


def _graph_labels(graph, session, inputs: dict, min_agreement: float = 0.999) -> tuple[dict, list[str]]:

    entries, failures = {}, []
    for label, x in inputs.items():
        with torch.no_grad():
            ref = graph(torch.from_numpy(x)).numpy()
        got = ort.run(session, x)[0]
        agreement = float((got == ref).mean()) if got.shape == ref.shape else 0.0
        entries[label] = {"shape": list(got.shape), "pixel_agreement": agreement, "passed": agreement >= min_agreement}
        if agreement < min_agreement:
            failures.append(f"ONNX labels agree with PyTorch on {agreement:.2%} of the pixels of {label} "
                            f"(need {min_agreement:.1%})")
    return entries, failures


if __name__ == "__main__":
    sys.exit(main())
