"""End-to-end export graphs: a dense detector with box decoding and NMS inside the graph, and a segmentor
with an optional argmax.

:class:`EndToEndDetector` reproduces mmdet's ``predict`` of a single-stage dense head (RetinaNet) up to the
rescaling to the original image, with tensor operations that export with dynamic batch, height and width:

1. per level, sigmoid class scores of every (anchor, class) pair, the ``nms_pre`` best kept (mmdet's
   ``filter_scores_and_topk``; pairs at or below ``score_thr`` are dropped by the NMS step);
2. the kept pairs' anchors decoded with the head's ``DeltaXYWHBBoxCoder`` (means, stds, the
   ``wh_ratio_clip`` clamp) and clipped to each image's size before padding (the optional input
   ``image_size``: N x 2 float, height and width, mmdet's ``img_shape``; a row that is not positive, and
   the default when it is not fed, stands for the input's own height and width);
3. boxes not wider and taller than ``min_bbox_size`` given the score -1 (never kept);
4. class-wise NMS as ONNX ``NonMaxSuppression`` over a class axis (boxes N x M x 4, scores N x C x M where
   a candidate scores only in its own class): IoU > ``iou_thr`` suppresses, scores > the optional input
   ``score_thr`` (default: the test config's) are kept, and the ``max_per_img`` best of each image, sorted
   by score.

The NMS node's two inputs are the pre-NMS candidates (``nms_pre`` slots per level, in level order); the
export check reads them from the file itself (:mod:`downstream.detection_parity`).

Outputs: ``dets`` (N x K x 5: x1, y1, x2, y2, score in input pixels) and ``labels`` (N x K, int64); rows past
an image's detections hold zeros and label -1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchvision
from torch import nn

from cdarts_deploy.errors import UserError


class EndToEndError(UserError):
    """The model cannot be exported end to end (unsupported head, coder or post-processing settings)."""


@dataclass(frozen=True)
class PostProcessing:
    """mmdet's dense-head test settings that the graph bakes in (the sidecar's ``postprocessing``)."""

    score_thr: float
    iou_thr: float
    max_per_img: int
    nms_pre: int
    min_bbox_size: float

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_test_cfg(cls, test_cfg) -> "PostProcessing":
        """Read a head's ``test_cfg`` (``nms=dict(type='nms', iou_threshold=...)``); anything else is refused."""
        if test_cfg is None:
            raise EndToEndError(
                "the detector has no test_cfg; set model.test_cfg (score_thr, nms, max_per_img, nms_pre)")
        nms = dict(test_cfg.get("nms") or {})
        if nms.get("type", "nms") != "nms" or nms.get("class_agnostic", False):
            raise EndToEndError(f"test_cfg.nms {nms}: only class-wise hard NMS (type='nms') is exported; "
                                "use --raw for the raw head outputs")
        settings = cls(score_thr=float(test_cfg.get("score_thr", 0.0)), iou_thr=float(nms.get("iou_threshold", 0.5)),
                       max_per_img=int(test_cfg.get("max_per_img", 100)), nms_pre=int(test_cfg.get("nms_pre", -1)),
                       min_bbox_size=float(test_cfg.get("min_bbox_size", -1)))
        if settings.nms_pre <= 0:
            raise EndToEndError("test_cfg.nms_pre must be a positive number of candidates per level for an "
                                "end-to-end export (mmdet's RetinaNet uses 1000)")
        if settings.max_per_img <= 0:
            raise EndToEndError("test_cfg.max_per_img must be positive for an end-to-end export")
        if not 0.0 <= settings.score_thr < 1.0 or not 0.0 < settings.iou_thr <= 1.0:
            raise EndToEndError(
                f"test_cfg score_thr {settings.score_thr} / iou_threshold {settings.iou_thr} out of range")
        return settings


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (opset >= 11): boxes N x B x 4 (corners), scores N x C x B; returns the
    selected (batch, class, box) triples.  In PyTorch it runs torchvision's NMS with the same rules."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class, iou_thr, score_thr):  # noqa: D401 - torch API

        limit, iou, floor = int(max_per_class), float(iou_thr), float(score_thr)
        rows = []
        for b in range(boxes.shape[0]):
            for c in range(scores.shape[1]):
                candidates = torch.nonzero(scores[b, c] > floor).flatten()
                if candidates.numel() == 0:
                    continue
                keep = torchvision.ops.nms(boxes[b, candidates], scores[b, c, candidates], iou)[:limit]
                chosen = candidates[keep]
                rows.append(torch.stack([torch.full_like(chosen, b), torch.full_like(chosen, c), chosen], 1))
        return torch.cat(rows) if rows else torch.zeros((0, 3), dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_thr, score_thr):
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_thr, score_thr, center_point_box_i=0)


def _index_like(t: torch.Tensor) -> torch.Tensor:
    """0, 1, ..., len(t) - 1 as float, computed from ``t`` so that the length stays dynamic in the graph."""
    return torch.ones_like(t).cumsum(0) - 1


class EndToEndDetector(nn.Module):
    """An mmdet single-stage detector (sigmoid classification, anchors, DeltaXYWH coder) with decoding and NMS."""

    input_names = ["input", "image_size", "score_thr"]
    #: the optional inputs' values when they are not fed (the file holds them as initializers)
    optional_inputs = ("image_size", "score_thr")
    output_names = ["dets", "labels"]

    def __init__(self, detector: nn.Module, post: PostProcessing | None = None) -> None:
        super().__init__()
        head = getattr(detector, "bbox_head", None)
        if head is None or not hasattr(head, "prior_generator") or not hasattr(head, "bbox_coder"):
            raise EndToEndError(f"{type(detector).__name__}: only single-stage dense detectors are exported end to end")
        coder = type(head.bbox_coder).__name__
        if coder != "DeltaXYWHBBoxCoder":
            raise EndToEndError(f"{type(head).__name__} decodes boxes with {coder}; the end-to-end export supports "
                                "DeltaXYWHBBoxCoder (RetinaNet); use --raw")
        if not getattr(head, "use_sigmoid_cls", False) or getattr(head.loss_cls, "custom_cls_channels", False):
            raise EndToEndError(f"{type(head).__name__} does not use sigmoid class scores; use --raw")
        if getattr(head, "with_score_factor", False) or head.bbox_coder.add_ctr_clamp:
            raise EndToEndError(f"{type(head).__name__} uses score factors or centre clamping; use --raw")
        generator = head.prior_generator
        if not hasattr(generator, "base_anchors"):
            raise EndToEndError(f"{type(generator).__name__} is not an anchor generator; use --raw")
        self.detector = detector
        self.post = post or PostProcessing.from_test_cfg(head.test_cfg)
        self.num_classes = int(head.cls_out_channels)
        self.strides = [(float(s[0]), float(s[1])) if isinstance(s, (tuple, list)) else (float(s), float(s))
                        for s in generator.strides]
        for i, anchors in enumerate(generator.base_anchors):
            self.register_buffer(f"base_anchors_{i}", anchors.detach().clone().float(), persistent=False)
        coder_ = head.bbox_coder
        self.register_buffer("means", torch.tensor(coder_.means, dtype=torch.float32), persistent=False)
        self.register_buffer("stds", torch.tensor(coder_.stds, dtype=torch.float32), persistent=False)
        self.clip_border = bool(coder_.clip_border)
        self.max_ratio = float(np.abs(np.log(16 / 1000)))  # mmdet's default wh_ratio_clip

    def _level(self, i: int, cls: torch.Tensor, deltas: torch.Tensor, bound: torch.Tensor):
        """The ``nms_pre`` best (anchor, class) pairs of one level: boxes N x k x 4, scores N x k, labels N x k."""
        k, classes = self.post.nms_pre, self.num_classes
        base = getattr(self, f"base_anchors_{i}")
        sx, sy = self.strides[i]
        xs = _index_like(cls[0, 0, 0, :]) * sx
        ys = _index_like(cls[0, 0, :, 0]) * sy
        xx = xs[None, :] + ys[:, None] * 0
        yy = ys[:, None] + xs[None, :] * 0
        shifts = torch.stack([xx, yy, xx, yy], -1).reshape(-1, 4)
        anchors = (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)  # mmdet's order: (y, x, anchor)
        scores = cls.permute(0, 2, 3, 1).flatten(1).sigmoid()  # N x (h*w*A*C), mmdet's (anchor, class) order
        deltas = deltas.permute(0, 2, 3, 1).flatten(1).unflatten(1, (-1, 4))  # N x (h*w*A) x 4
        # Padding keeps top-k's k within the row at any input size; padded pairs score -1 and never survive.
        scores = torch.cat([scores, (scores[:, :1] * 0 - 1).repeat(1, k)], 1)
        extra = k // classes + 1
        deltas = torch.cat([deltas, (deltas[:, :1] * 0).repeat(1, extra, 1)], 1)
        anchors = torch.cat([anchors, (anchors[:1] * 0).repeat(extra, 1)], 0)
        top, index = scores.topk(k, dim=1)
        anchor_index = torch.div(index, classes, rounding_mode="floor")
        labels = index - anchor_index * classes
        picked = torch.gather(deltas, 1, anchor_index.unsqueeze(-1).repeat(1, 1, 4))
        return self._decode(anchors[anchor_index], picked, bound), top, labels

    def _decode(self, rois: torch.Tensor, deltas: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        """mmdet's ``delta2bbox`` (no centre clamp), boxes clipped to [0, w] x [0, h] of each image."""
        d = deltas * self.stds + self.means
        pxy = (rois[..., :2] + rois[..., 2:]) * 0.5
        pwh = rois[..., 2:] - rois[..., :2]
        gxy = pxy + pwh * d[..., :2]
        gwh = pwh * d[..., 2:].clamp(min=-self.max_ratio, max=self.max_ratio).exp()
        boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], -1)
        if self.clip_border:
            boxes = torch.minimum(boxes.clamp(min=0), bound)
        return boxes

    def candidates(self, x: torch.Tensor, image_size: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pre-NMS candidates: boxes N x M x 4 and class scores N x C x M (a candidate scores in its own
        class only, -1 elsewhere; padded and too small candidates score -1 everywhere), ``nms_pre`` slots per
        level in level order -- the NMS node's two inputs."""
        post = self.post
        head = self.detector.bbox_head
        cls_scores, bbox_preds = head(self.detector.extract_feat(x))[:2]
        # the input's own height and width (traced as tensors, so they stay dynamic), where no size is given
        own = torch.stack([torch.ones_like(x[:, 0, :, 0]).sum(1), torch.ones_like(x[:, 0, 0, :]).sum(1)], 1)
        size = own if image_size is None else torch.where(image_size > 0, image_size.to(x.dtype), own)
        bound = size[:, [1, 0, 1, 0]].unsqueeze(1)  # N x 1 x 4: w, h, w, h
        levels = [self._level(i, c, d, bound) for i, (c, d) in enumerate(zip(cls_scores, bbox_preds))]
        boxes = torch.cat([lv[0] for lv in levels], 1)  # N x M x 4
        scores = torch.cat([lv[1] for lv in levels], 1)  # N x M
        labels = torch.cat([lv[2] for lv in levels], 1)  # N x M
        if post.min_bbox_size >= 0:
            wh = boxes[..., 2:] - boxes[..., :2]
            valid = (wh[..., 0] > post.min_bbox_size) & (wh[..., 1] > post.min_bbox_size)
            scores = torch.where(valid, scores, scores * 0 - 1)
        # Class-wise NMS through NonMaxSuppression's class axis: boxes of different classes never meet
        own_class = labels.unsqueeze(1) == torch.arange(self.num_classes)[None, :, None]  # N x C x M
        return boxes, torch.where(own_class, scores.unsqueeze(1), scores.unsqueeze(1) * 0 - 1)

    def forward(self, x: torch.Tensor, image_size: torch.Tensor | None = None,
                score_thr: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        post = self.post
        boxes, class_scores = self.candidates(x, image_size)
        floor = (torch.tensor([post.score_thr], dtype=torch.float32) if score_thr is None
                 else score_thr.reshape(1).to(torch.float32).clamp(min=0))  # -1 (padding) is never kept
        selected = _NonMaxSuppression.apply(
            boxes, class_scores, torch.tensor([post.max_per_img], dtype=torch.long),
            torch.tensor([post.iou_thr], dtype=torch.float32), floor)
        b, c, m = selected[:, 0], selected[:, 1], selected[:, 2]
        dets = torch.cat([boxes[b, m], class_scores[b, c, m].unsqueeze(1)], 1)  # S x 5
        images = _index_like(x[:, 0, 0, 0]).long()
        mine = b[None, :] == images[:, None]  # N x S
        batched = torch.where(mine.unsqueeze(-1), dets[None], dets[None] * 0)
        batched_labels = torch.where(mine, c[None], c[None] * 0 - 1)
        k = post.max_per_img
        pad = torch.zeros_like(x[:, 0, 0, :1])  # N x 1; rows that keep top-k's k within reach when S < K
        batched = torch.cat([batched, pad.unsqueeze(1).repeat(1, k, 5)], 1)
        batched_labels = torch.cat([batched_labels, pad.long().repeat(1, k) - 1], 1)
        _, order = batched[..., 4].topk(k, dim=1)
        dets = torch.gather(batched, 1, order.unsqueeze(-1).repeat(1, 1, 5))
        return dets, torch.gather(batched_labels, 1, order)


class SegmentorLabels(nn.Module):
    """An mmseg encoder-decoder's per-pixel class (argmax of the logits at the input size): N x H x W int64."""

    output_names = ["labels"]

    def __init__(self, logits_graph: nn.Module) -> None:
        super().__init__()
        self.logits = logits_graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(1)
