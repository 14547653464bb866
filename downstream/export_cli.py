"""``cdarts-export-mm``: export a detector or segmentor from an mmdet/mmseg config to verified ONNX.

    cdarts-export-mm downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py \
        --checkpoint work_dirs/retinanet/epoch_12.pth --input-size 800x1344 --out out/

Detectors export backbone + neck + head without post-processing or NMS: the
outputs are the raw class scores and box deltas of every level
(``cls_score_s8``, ..., ``bbox_delta_s8``, ...), which deployment runtimes
decode with their own NMS.  Segmentors export backbone + decoder with the
logits resized to the input (``seg_logits``, N x classes x H x W).

Writes ``<name>.onnx`` and ``<name>.json`` (outputs, shapes, parity against
PyTorch in ONNX Runtime, versions); nothing is written unless parity holds.
Exit status: 0 success, 1 parity failed, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from cdarts_deploy.atomic_files import atomic_path, publish, temp_beside
from cdarts_deploy.commands.args import OneLineParser, UsageError, parse_size, positive_int, prepare_out_dir


class DetectorGraph(nn.Module):
    """Backbone, neck and dense head of an mmdet single-stage detector; raw per-level outputs."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        strides = detector.bbox_head.prior_generator.strides
        self.level_names = [f"s{s[0] if isinstance(s, (tuple, list)) else s}" for s in strides]
        self.output_names = [f"cls_score_{n}" for n in self.level_names] + [f"bbox_delta_{n}" for n in self.level_names]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cls_scores, bbox_deltas = self.detector.bbox_head(self.detector.extract_feat(x))[:2]
        return (*cls_scores, *bbox_deltas)


class SegmentorGraph(nn.Module):
    """Backbone and decode head of an mmseg encoder-decoder; logits at the input resolution."""

    output_names = ["seg_logits"]

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.segmentor.decode_head
        logits = head(self.segmentor.extract_feat(x))
        return nn.functional.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=head.align_corners)


def graph_for(model: nn.Module) -> nn.Module:
    """The exportable graph of an mmdet detector or mmseg segmentor."""
    if hasattr(model, "bbox_head") and hasattr(model, "extract_feat"):
        if not hasattr(model.bbox_head, "prior_generator"):
            raise UsageError(f"{type(model).__name__}: only dense single-stage heads (RetinaNet, FCOS, ...) are exported")
        return DetectorGraph(model).eval()
    if hasattr(model, "decode_head") and hasattr(model, "extract_feat"):
        return SegmentorGraph(model).eval()
    raise UsageError(f"{type(model).__name__} is neither an mmdet detector nor an mmseg segmentor")


def build_from_config(config: str, cfg_options: dict | None = None, checkpoint: str | None = None) -> nn.Module:
    """Build the config's model with its registries and load ``checkpoint`` safely."""
    from mmengine.registry import MODELS, init_default_scope

    from downstream.checkpoints import mmengine_safe_globals
    from downstream.runner_setup import UsageError as SetupError
    from downstream.runner_setup import describe_load_error, load_config

    try:
        cfg = load_config(config, cfg_options)
    except SetupError as exc:
        raise UsageError(str(exc)) from None
    init_default_scope(cfg.get("default_scope", "mmdet"))
    model_cfg = cfg.model
    if checkpoint is not None:  # the checkpoint replaces any backbone init weights
        model_cfg.get("backbone", {}).pop("init_cfg", None)
    model = MODELS.build(model_cfg)
    if checkpoint is None:
        model.init_weights()
        return model.eval()
    if not os.path.isfile(checkpoint):
        raise UsageError(f"checkpoint {checkpoint} not found; pass the .pth file tools/train.py wrote")
    try:
        with mmengine_safe_globals():
            obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        message = describe_load_error(exc, checkpoint)
        raise UsageError(message or f"checkpoint {checkpoint} cannot be read ({exc})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise UsageError(f"checkpoint {checkpoint} holds no state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise UsageError(
            f"checkpoint {checkpoint} does not fit this config: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[0]}); pass the config it was trained with"
        )
    return model.eval()


def build_parser() -> argparse.ArgumentParser:
    from mmengine.config import DictAction

    p = OneLineParser(prog="cdarts-export-mm", description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="mmdet/mmseg config, e.g. downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py")
    p.add_argument("--checkpoint", help="checkpoint from tools/train.py (default: the config's initial weights)")
    p.add_argument("--input-size", type=parse_size, default=(512, 512), help="HxW of the exported input (default 512x512)")
    p.add_argument("--out", default=".", help="output folder (created if missing)")
    p.add_argument("--name", help="output file stem (default: the config's name)")
    p.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config entries: key=value")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as exc:
        print(f"cdarts-export-mm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cdarts-export-mm: interrupted; no files written", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    from cdarts_deploy import onnx_export as ox
    from cdarts_deploy.parity import compare_outputs, onnxruntime_outputs, onnxruntime_session, torch_outputs

    out_dir = prepare_out_dir(args.out)
    name = args.name or Path(args.config).stem
    log = lambda msg: print(f"[cdarts-export-mm] {msg}", file=sys.stderr)  # noqa: E731

    model = build_from_config(args.config, args.cfg_options, args.checkpoint)
    graph = graph_for(model)
    height, width = args.input_size
    log(f"exporting {type(model).__name__} of {args.config} at {height}x{width}")

    onnx_tmp = temp_beside(out_dir / f"{name}.onnx")
    try:
        ox.export_onnx(graph, onnx_tmp, (1, 3, height, width), opset=args.opset, dynamic_batch=False,
                       output_names=graph.output_names)
        ox.check_onnx(onnx_tmp)
        batch = ox.random_batch(1, (height, width), seed=0)
        reference = torch_outputs(graph, batch)
        session = onnxruntime_session(str(onnx_tmp))
        candidate = onnxruntime_outputs(session, batch)
        parity = compare_outputs(graph.output_names, reference, candidate, "fp32")
        report = {
            "config": str(args.config),
            "checkpoint": args.checkpoint,
            "model": type(model).__name__,
            "input": {"name": session.get_inputs()[0].name, "shape": [1, 3, height, width]},
            "outputs": [p.as_dict() for p in parity],
            "opset": args.opset,
            "post_processing": "none (raw per-level outputs; decode and NMS downstream)"
            if isinstance(graph, DetectorGraph) else "logits resized to the input; argmax downstream",
            "versions": ox.library_versions(),
        }
        failed = [p for p in parity if not p.passed]
        if failed:
            worst = max(failed, key=lambda p: p.max_abs)
            log(f"parity FAILED for {len(failed)} outputs (worst {worst.name}: max abs {worst.max_abs:.3g}); nothing written")
            return 1
        with atomic_path(out_dir / f"{name}.json") as json_tmp:
            json_tmp.write_text(json.dumps(report, indent=2) + "\n")
        publish(onnx_tmp, out_dir / f"{name}.onnx")
    finally:
        if onnx_tmp.exists():
            onnx_tmp.unlink()
    worst = max(p.max_abs for p in parity)
    log(f"wrote {out_dir / (name + '.onnx')} ({len(parity)} outputs, max abs diff vs PyTorch {worst:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
