"""The sidecar JSON of an end-to-end export: what a runtime does before and after the ONNX graph.

It is written from the config's test pipeline (``Resize``), its ``data_preprocessor`` (mean, std, channel
order, padding) and, for detectors, the post-processing settings baked into the graph, so that a runtime
needs nothing from mmdet or mmseg.  :mod:`downstream.runtime_recipe` follows it with numpy and OpenCV.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cdarts_deploy.errors import UserError

FORMAT = "cdarts-deploy end-to-end sidecar"
VERSION = 1


class SidecarError(UserError):
    """A config whose preprocessing cannot be described, or a sidecar file that cannot be used."""


def _resize_step(pipeline: list) -> dict:
    """The test pipeline's single ``Resize`` as a rule (mmcv's ``imrescale`` / ``imresize`` semantics)."""
    steps = [dict(s) for s in pipeline if str(s.get("type", "")).split(".")[-1] == "Resize"]
    if len(steps) != 1:
        raise SidecarError(
            f"the config's test pipeline has {len(steps)} Resize steps; the sidecar describes exactly one")
    step = steps[0]
    if step.get("scale") is None:
        raise SidecarError("the test pipeline's Resize has no scale (only scale_factor); set a target scale")
    scale = step["scale"]
    scale = [int(scale), int(scale)] if isinstance(scale, (int, float)) else [int(v) for v in scale]
    keep = bool(step.get("keep_ratio", False))
    interpolation = step.get("interpolation", "bilinear")
    if interpolation != "bilinear":
        raise SidecarError(f"Resize interpolation {interpolation!r}: only bilinear is described")
    rule = ("s = min(max(scale) / max(h, w), min(scale) / min(h, w)); new_w = int(w * s + 0.5), "
            "new_h = int(h * s + 0.5)" if keep else "new_w, new_h = scale")
    return {"scale": scale, "keep_ratio": keep, "interpolation": "bilinear (OpenCV INTER_LINEAR)", "rule": rule,
            "scale_factor": "w_scale = new_w / w, h_scale = new_h / h"}


def preprocessing(cfg: Any) -> dict:
    """Image decoding, resize, channel order, normalization and padding of the config's test path."""
    pre = dict(cfg.model.get("data_preprocessor") or {})
    if "mean" not in pre or "std" not in pre:
        raise SidecarError("the config's model.data_preprocessor has no mean/std; the sidecar needs both")
    detector = cfg.get("default_scope", "mmdet") != "mmseg"
    divisor = int(pre.get("pad_size_divisor", 1) or 1) if detector else 1
    pad_value = float(pre.get("pad_value", 0) if detector else pre.get("pad_val", 0))
    bgr_to_rgb = bool(pre.get("bgr_to_rgb", False) or pre.get("rgb_to_bgr", False))
    return {
        "decode": "8-bit colour image as OpenCV reads it (H x W x 3, BGR)",
        "resize": _resize_step(list(cfg.test_dataloader.dataset.pipeline)),
        "channel_order": "RGB" if bgr_to_rgb else "BGR",
        "mean": [float(v) for v in pre["mean"]],
        "std": [float(v) for v in pre["std"]],
        "normalize": "float32 (pixel - mean) / std per channel, after the channel order is applied",
        "pad": {"size_divisor": divisor, "value": pad_value,
                "where": "bottom and right, after normalization, to a multiple of size_divisor" if divisor > 1
                else "none for a single image; a batch is padded to its largest image"},
        "layout": "NCHW float32",
    }


def build(task: str, model_file: str, cfg: Any, ranges: dict, outputs: dict, postprocessing: dict | None,
          to_original: dict, classes: list[str] | None) -> dict:
    """The whole sidecar document."""
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "model_file": model_file,
        "input": {"name": "input", **ranges},
        "preprocessing": preprocessing(cfg),
        "postprocessing": postprocessing or {"in_graph": False},
        "outputs": outputs,
        "to_original_image": to_original,
    }
    if classes:
        doc["classes"] = list(classes)
    return doc


def read(path: str | os.PathLike) -> dict:
    """A sidecar written by ``cdarts-export-mm``; anything else is a one-line :class:`SidecarError`."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise SidecarError(f"sidecar {path} not found; pass the .sidecar.json written next to the .onnx file") from None
    except (OSError, ValueError) as exc:
        raise SidecarError(f"sidecar {path} is not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise SidecarError(f"{path} is not a version-{VERSION} sidecar of cdarts-export-mm")
    return doc
