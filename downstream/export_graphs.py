"""Exportable graphs of mmdet detectors and mmseg segmentors, building one from a config, and the
dynamic-shape export of the end-to-end graphs.

:class:`DetectorGraph` is the raw export (``--raw``): backbone + neck + head without post-processing or
NMS, the outputs being the class scores and box deltas of every level (``cls_score_s8``, ...,
``bbox_delta_s8``, ...).  The end-to-end detector (decoding and NMS in the graph) is
:class:`downstream.end_to_end.EndToEndDetector`.  Segmentors export backbone + decoder with the logits
resized to the input (``seg_logits``, N x classes x H x W), or their argmax.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from backbones.checkpoint_io import extract_state_dict, load_into, read_checkpoint
from cdarts_deploy.errors import UserError

#: What a checkpoint that does not fit a config usually means.
CHECKPOINT_HINT = "pass the config it was trained with"


class GraphError(UserError):
    """The model of a config cannot be exported (not a dense detector or a segmentor)."""


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
            raise GraphError(
                f"{type(model).__name__}: only dense single-stage heads (RetinaNet, FCOS, ...) are exported")
        return DetectorGraph(model).eval()
    if hasattr(model, "decode_head") and hasattr(model, "extract_feat"):
        return SegmentorGraph(model).eval()
    raise GraphError(f"{type(model).__name__} is neither an mmdet detector nor an mmseg segmentor")


def build_from_config(config: str, cfg_options: dict | None = None, checkpoint: str | None = None) -> nn.Module:
    """Build the config's model with its registries and load ``checkpoint`` safely (``weights_only``)."""
    return build_with_config(config, cfg_options, checkpoint)[0]


def build_with_config(config: str, cfg_options: dict | None = None,
                      checkpoint: str | None = None) -> tuple[nn.Module, Any]:
    """:func:`build_from_config` and the mmengine ``Config`` it was built from."""
    from mmengine.registry import MODELS, init_default_scope

    from downstream.checkpoints import mmengine_safe_globals
    from downstream.runner_setup import ConfigError, load_config

    cfg = load_config(config, cfg_options)  # a config that cannot be used is a one-line ConfigError
    model_cfg = cfg.get("model")
    # a genotype JSON or a classification config reads as a config too, without a detector or segmentor in it
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("type"), str):
        raise ConfigError(f"config {config} defines no model = dict(type=...); pass an mmdetection or "
                          "mmsegmentation config such as downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py")
    init_default_scope(cfg.get("default_scope", "mmdet"))
    if checkpoint is not None:  # the checkpoint replaces any backbone init weights
        model_cfg.get("backbone", {}).pop("init_cfg", None)
    try:
        model = MODELS.build(model_cfg)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # an unregistered type, a wrong argument
        raise ConfigError(f"config {config}: model type {model_cfg['type']!r} is not a detector or segmentor this "
                          f"environment can build ({exc.__class__.__name__}); pass an mmdetection or mmsegmentation "
                          "config") from None
    if checkpoint is None:
        model.init_weights()
        return model.eval(), cfg
    with mmengine_safe_globals():  # mmengine checkpoints carry numpy values in their metadata
        obj: Any = read_checkpoint(checkpoint)
    load_into(model, extract_state_dict(obj, checkpoint, nested_keys=("state_dict",)), checkpoint,
              hint=CHECKPOINT_HINT)
    return model.eval(), cfg


def export_dynamic(graph: nn.Module, path: Any, example: tuple[torch.Tensor, ...], opset: int,
                   input_names: list[str], output_names: list[str],
                   spatial_outputs: dict[str, tuple[int, int]] | None = None,
                   fixed_dims: dict[str, dict[int, int]] | None = None,
                   defaults: dict[str, np.ndarray] | None = None) -> None:
    """Export with the tracing exporter, the image input's (the first) batch, height and width dynamic
    (``batch``, ``height``, ``width``); every other input's and every output's first axis is the batch, and
    ``spatial_outputs`` names outputs whose two given axes are the input's height and width.  ONNX
    ``NonMaxSuppression`` comes from the graph's own symbolic.  ``fixed_dims`` states output axes of a fixed
    length that the tracer leaves symbolic (the detections per image).  ``defaults`` makes inputs optional:
    each becomes an initializer of the same name, the value ONNX Runtime uses when the input is not fed;
    its shape is declared as given, except that an input of more than one dimension keeps its batch axis."""
    axes: dict[str, dict[int, str]] = {input_names[0]: {0: "batch", 2: "height", 3: "width"}}
    for name in input_names[1:]:
        if defaults is None or name not in defaults or np.ndim(defaults[name]) > 1:
            axes[name] = {0: "batch"}
    for name in output_names:
        axes[name] = {0: "batch"}
        if spatial_outputs and name in spatial_outputs:
            h, w = spatial_outputs[name]
            axes[name].update({h: "height", w: "width"})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter; the file is checked in ONNX Runtime afterwards
        torch.onnx.export(graph, tuple(example), str(path), dynamo=False, input_names=input_names,
                          output_names=output_names, dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)
    if fixed_dims or defaults:
        proto = onnx.load(str(path))
        for out in proto.graph.output:
            for axis, value in (fixed_dims or {}).get(out.name, {}).items():
                out.type.tensor_type.shape.dim[axis].dim_value = value
        for name, value in (defaults or {}).items():
            proto.graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        onnx.save(proto, str(path))
