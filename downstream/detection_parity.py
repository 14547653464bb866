"""Does an end-to-end detector file compute what mmdet computes?  Judged where rounding cannot decide.

The file is run with its NMS node's two inputs exposed as extra outputs (:func:`probe`): the pre-NMS
candidates, ``nms_pre`` slots per level (:mod:`downstream.end_to_end`).  Three comparisons, each deterministic:

1. *Candidates against mmdet's own head.*  mmdet's dense head runs on the same preprocessed input (the
   config's pipeline and data preprocessor) and decodes every (anchor, class) pair of a level with its own
   ``_predict_by_feat_single`` at score threshold 0 (no NMS).  Every candidate of the file must be one of
   those pairs: same label, score within ``score_atol``, box within ``box_atol + box_rtol * |box|``; every pair
   that scores more than ``score_atol`` above the level's ``nms_pre``-th best must be a candidate.  Pairs within
   ``score_atol`` of that cut may be either side of it -- a tolerance on values, never a count of exceptions.
2. *NMS on the file's own candidates.*  The file's detections must be those that class-wise NMS (IoU above
   ``iou_thr`` suppresses, scores above ``score_thr`` kept, the ``max_per_img`` best) selects from the very
   candidates the file's NMS received -- run at the default ``score_thr`` and at ``score_thr = 0``, where every
   candidate is eligible.  Both sides see identical numbers; a detection may differ only where the decision
   is a float tie (an IoU within ``iou_eps`` of the threshold, equal scores) or hangs on one.
3. *The sidecar.*  Its recipe's input tensor, resized size and scale factors equal mmdet's pipeline's; its
   post-processing settings and the file's default ``score_thr`` equal the model's ``test_cfg``.

No compared candidate, or no detection compared at ``score_thr = 0``, is a failure: a check that compared
nothing proves nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from cdarts_deploy.deploy import ort
from downstream import runtime_recipe
from downstream.end_to_end import PostProcessing


@dataclass(frozen=True)
class ParityRule:
    score_atol: float = 1e-4
    box_atol: float = 0.02
    box_rtol: float = 1e-4
    iou_eps: float = 1e-5
    input_atol: float = 1e-4

    def as_dict(self) -> dict:
        return {"score_atol": self.score_atol, "box_atol_pixels": self.box_atol, "box_rtol": self.box_rtol,
                "iou_eps": self.iou_eps, "input_atol": self.input_atol,
                "rule": "pre-NMS candidates of the file equal mmdet's decoded (anchor, class) pairs (same label, "
                        "|score difference| <= score_atol, |box difference| <= box_atol + box_rtol * |box|), "
                        "none of mmdet's nms_pre best more than score_atol above the cut missing; the file's "
                        "detections equal class-wise NMS of its own candidates at the default score_thr and at 0, "
                        "except float ties (IoU within iou_eps of iou_thr, equal scores) and what hangs on them"}


@dataclass(frozen=True)
class Probe:
    """An ONNX Runtime session of the file with the NMS node's inputs (boxes, class scores) as outputs."""

    session: Any
    outputs: tuple[str, str, str, str]
    defaults: dict[str, np.ndarray]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """dets, labels, candidate boxes (N x M x 4) and class scores (N x C x M)."""
        return list(self.session.run(list(self.outputs), feeds))


def probe(onnx_path: str | Path) -> Probe | str:
    """The file with its NMS inputs exposed, or why that is impossible (one line)."""
    proto = onnx.load(str(onnx_path))
    nms = [n for n in proto.graph.node if n.op_type == "NonMaxSuppression"]
    if len(nms) != 1:
        return f"the graph has {len(nms)} NonMaxSuppression nodes (expected one)"
    boxes, scores = nms[0].input[0], nms[0].input[1]
    for name in (boxes, scores):
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    inputs = {i.name for i in proto.graph.input}
    defaults = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer if t.name in inputs}
    session = ort.session(proto.SerializeToString())
    return Probe(session, ("dets", "labels", boxes, scores), defaults)


def mmdet_inputs(model: Any, cfg: Any, image: np.ndarray) -> tuple[torch.Tensor, dict]:
    """mmdet's test pipeline and data preprocessor on one decoded BGR image: 1 x 3 x H x W and its metainfo."""
    from mmcv.transforms import Compose
    from mmengine.registry import DefaultScope

    steps = copy.deepcopy(list(cfg.test_dataloader.dataset.pipeline))
    steps = [s for s in steps if str(s["type"]).split(".")[-1] != "LoadAnnotations"]
    steps[0] = dict(type="mmdet.LoadImageFromNDArray")  # as mmdet.apis.inference_detector does
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmdet")):
        data = Compose(steps)(dict(img=image, img_id=0))
        with torch.no_grad():
            batch = model.data_preprocessor(dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]]), False)
    return batch["inputs"], batch["data_samples"][0].metainfo


def reference_candidates(model: Any, x: torch.Tensor, img_shapes: Sequence[tuple[int, int]],
                         rule: ParityRule = ParityRule()) -> list[list[dict[str, np.ndarray]]]:
    """Per image and level, mmdet's decoded (anchor, class) pairs that can be among the level's ``nms_pre``
    best (score above the cut less a margin), with ``cut``: the ``nms_pre``-th best score (-inf if fewer)."""
    from mmengine.config import ConfigDict

    head = model.bbox_head
    post = PostProcessing.from_test_cfg(head.test_cfg)
    with torch.no_grad():
        cls_scores, bbox_preds = head(model.extract_feat(x))[:2]
        priors = head.prior_generator.grid_priors([c.shape[-2:] for c in cls_scores], dtype=x.dtype,
                                                  device=x.device)
        out = []
        for i, shape in enumerate(img_shapes):
            levels = []
            for cls, deltas, anchors in zip(cls_scores, bbox_preds, priors):
                dense = cls[i].permute(1, 2, 0).reshape(-1).sigmoid()
                k = min(post.nms_pre, dense.numel())
                cut = float(dense.topk(k).values[-1]) if dense.numel() > post.nms_pre else -np.inf
                floor = cut - 2 * rule.score_atol if np.isfinite(cut) else -1.0
                settings = ConfigDict(score_thr=floor, nms_pre=dense.numel(), min_bbox_size=-1)
                found = head._predict_by_feat_single([cls[i]], [deltas[i]], [None], [anchors],
                                                     dict(img_shape=tuple(shape)), settings, rescale=False,
                                                     with_nms=False)
                boxes = found.bboxes.numpy().astype(np.float64)
                wh = boxes[:, 2:] - boxes[:, :2]  # mmdet's min_bbox_size rule
                valid = ((wh[:, 0] > post.min_bbox_size) & (wh[:, 1] > post.min_bbox_size)
                         if post.min_bbox_size >= 0 else np.ones(len(boxes), bool))
                levels.append({"boxes": boxes, "scores": found.scores.numpy().astype(np.float64),
                               "labels": found.labels.numpy(), "valid": valid, "cut": cut})
            out.append(levels)
    return out


def compare_candidates(ref: Sequence[dict], boxes: np.ndarray, class_scores: np.ndarray, nms_pre: int,
                       rule: ParityRule = ParityRule()) -> tuple[dict, list[str]]:
    """One image's file candidates (boxes M x 4, class scores C x M) against mmdet's pairs per level."""
    failures: list[str] = []
    if boxes.shape[0] != len(ref) * nms_pre:
        return {"compared": 0}, [f"{boxes.shape[0]} candidates for {len(ref)} levels of {nms_pre} (nms_pre)"]
    scores, labels = class_scores.max(0).astype(np.float64), class_scores.argmax(0)
    compared, missing, score_diff, box_diff = 0, 0, 0.0, 0.0
    for level, pairs in enumerate(ref):
        slots = np.arange(level * nms_pre, (level + 1) * nms_pre)
        slots = slots[scores[slots] >= 0]  # padding and too small boxes score -1
        may = pairs["valid"] & (pairs["scores"] >= pairs["cut"] - rule.score_atol)
        used = np.zeros(len(pairs["scores"]), bool)
        for label in np.unique(labels[slots]):
            mine = np.flatnonzero((pairs["labels"] == label) & may)
            order = mine[np.argsort(pairs["scores"][mine], kind="stable")]
            ref_scores = pairs["scores"][order]
            for slot in slots[labels[slots] == label]:
                s, box = scores[slot], boxes[slot].astype(np.float64)
                lo = np.searchsorted(ref_scores, s - rule.score_atol, side="left")
                hi = np.searchsorted(ref_scores, s + rule.score_atol, side="right")
                window = order[lo:hi]
                window = window[~used[window]]
                diff = np.abs(pairs["boxes"][window] - box)
                close = (diff <= rule.box_atol + rule.box_rtol * np.abs(pairs["boxes"][window])).all(1)
                if not close.any():
                    failures.append(f"level {level}: a candidate (label {label}, score {s:.5f}, box "
                                    f"{np.round(box, 2).tolist()}) is none of mmdet's {nms_pre} best pairs")
                    continue
                window, diff = window[close], diff[close]
                pick = int(np.argmin(np.abs(pairs["scores"][window] - s) + diff.max(1)))
                used[window[pick]] = True
                compared += 1
                score_diff = max(score_diff, abs(float(pairs["scores"][window[pick]]) - float(s)))
                box_diff = max(box_diff, float(diff[pick].max()))
        # as many candidates as mmdet keeps: its nms_pre best less the too small ones (give or take those at the cut)
        top = np.argsort(-pairs["scores"], kind="stable")[:nms_pre]
        expected = int(pairs["valid"][top].sum())
        slack = int((~pairs["valid"] & (np.abs(pairs["scores"] - pairs["cut"]) <= rule.score_atol)).sum())
        if abs(len(slots) - expected) > slack:
            failures.append(f"level {level}: {len(slots)} candidates where mmdet keeps {expected}")
        must = pairs["valid"] & (pairs["scores"] > pairs["cut"] + rule.score_atol) & ~used
        if must.any():
            missing += int(must.sum())
            j = int(np.flatnonzero(must)[np.argmax(pairs["scores"][must])])
            failures.append(f"level {level}: {int(must.sum())} of mmdet's {nms_pre} best pairs are no candidate "
                            f"(best: label {pairs['labels'][j]}, score {pairs['scores'][j]:.5f})")
    entry = {"compared": compared, "missing": missing, "max_score_diff": score_diff, "max_box_diff": box_diff}
    return entry, failures


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], others[:, :2])
    rb = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    union = np.prod(box[2:] - box[:2]) + np.prod(others[:, 2:] - others[:, :2], axis=1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def reference_nms(boxes: np.ndarray, class_scores: np.ndarray, score_thr: float, iou_thr: float,
                  max_per_img: int, iou_eps: float) -> tuple[list[tuple[int, int]], set[tuple[int, int]]]:
    """Class-wise NMS (float64) of one image's candidates: the kept (class, candidate) pairs, best first, and
    the pairs whose fate is a float tie or hangs on one (either side of it is right)."""
    boxes = boxes.astype(np.float64)
    kept, loose = [], set()
    for c in range(class_scores.shape[0]):
        scores = class_scores[c]
        idx = np.flatnonzero(scores > np.float32(score_thr))
        idx = idx[np.lexsort((idx, -scores[idx]))]
        alive = np.ones(len(idx), bool)
        shaky = np.zeros(len(idx), bool)
        for p, i in enumerate(idx):
            rest = idx[p + 1:]
            iou = _iou(boxes[i], boxes[rest])
            near = np.abs(iou - iou_thr) <= iou_eps
            tie = (scores[rest] == scores[i]) & (iou > iou_thr - iou_eps)
            if alive[p] or shaky[p]:  # only a box that is (or may be) kept decides anything
                # a box whose fate is open makes the fate of what it overlaps open too
                spread = (iou > iou_thr - iou_eps) if shaky[p] else np.zeros(len(rest), bool)
                shaky[p + 1:] |= near | tie | spread
                shaky[p] |= bool(tie.any())
            if alive[p]:
                alive[p + 1:] &= ~(iou > iou_thr)
        kept += [(c, int(i)) for i in idx[alive]]
        loose |= {(c, int(i)) for i in idx[shaky]}
    kept.sort(key=lambda ci: (-float(class_scores[ci]), ci[1]))
    # the best max_per_img: a sure detection is surely in when fewer than max_per_img sure or open ones score
    # at least as much, surely out when max_per_img sure ones score more; open between
    sure = [ci for ci in kept if ci not in loose]
    open_scores = np.sort([float(class_scores[ci]) for ci in loose])
    for n, ci in enumerate(sure):
        s = float(class_scores[ci])
        higher_sure = sum(1 for o in sure[:n] if float(class_scores[o]) > s)
        at_least = n + len(open_scores) - np.searchsorted(open_scores, s, side="left")
        if higher_sure < max_per_img <= at_least:
            loose.add(ci)
    return kept[:max_per_img], loose


def compare_nms(dets: np.ndarray, labels: np.ndarray, boxes: np.ndarray, class_scores: np.ndarray,
                score_thr: float, post: PostProcessing, rule: ParityRule = ParityRule()) -> tuple[dict, list[str]]:
    """One image's detections against class-wise NMS of the candidates its NMS received."""
    kept, loose = reference_nms(boxes, class_scores, score_thr, post.iou_thr, post.max_per_img, rule.iou_eps)
    rows = labels >= 0
    if (dets[~rows] != 0).any():
        return {"compared": 0}, ["rows past the detections are not zero"]
    if (np.diff(dets[rows, 4]) > 0).any():
        return {"compared": 0}, ["detections are not sorted by score"]
    index = {}
    for c, m in zip(*np.nonzero(class_scores >= 0)):
        index[(int(c), class_scores[c, m].tobytes(), boxes[m].tobytes())] = (int(c), int(m))
    got = set()
    for d, c in zip(dets[rows], labels[rows]):
        key = (int(c), np.float32(d[4]).tobytes(), d[:4].astype(np.float32).tobytes())
        if key not in index:
            return {"compared": 0}, [f"a detection (label {c}, score {d[4]:.5f}) is none of the NMS inputs"]
        got.add(index[key])
    ref = set(kept)
    wrong = sorted((ref ^ got) - loose, key=lambda ci: -float(class_scores[ci]))
    entry = {"detections": len(got), "reference": len(ref), "compared": len((ref & got) - loose),
             "open_ties": len((ref ^ got) & loose)}
    if wrong:
        c, m = wrong[0]
        side = "kept only by the file" if (c, m) in got else "missing from the file"
        return entry, [f"{len(wrong)} detection(s) differ from class-wise NMS of the file's own candidates at "
                       f"score_thr {score_thr:g} (first: label {c}, score {class_scores[c, m]:.5f}, {side})"]
    return entry, []


def check_batch(model: Any, pb: Probe, x: np.ndarray, sizes: np.ndarray | None, reference_input: torch.Tensor,
                img_shapes: Sequence[tuple[int, int]], rule: ParityRule = ParityRule()) -> tuple[list[dict], list[str]]:
    """The file on ``x`` (``image_size`` fed when ``sizes`` is given) against mmdet's head on
    ``reference_input`` with ``img_shapes``: candidates, then NMS at the default threshold and at 0."""
    post = PostProcessing.from_test_cfg(model.bbox_head.test_cfg)
    ref = reference_candidates(model, reference_input, img_shapes, rule)
    feeds = {"input": x} if sizes is None else {"input": x, "image_size": sizes}
    runs = {post.score_thr: pb.run(feeds), 0.0: pb.run({**feeds, "score_thr": np.zeros(1, np.float32)})}
    rows, failures = [], []
    for i in range(len(x)):
        dets, labels, boxes, class_scores = (a[i] for a in runs[post.score_thr])
        row, more = compare_candidates(ref[i], boxes, class_scores, post.nms_pre, rule)
        failures += [f"image {i}: {m}" for m in more]
        for thr, (d, lab, b, cs) in runs.items():
            if not (np.array_equal(b[i], boxes) and np.array_equal(cs[i], class_scores)):
                failures.append(f"image {i}: the candidates depend on score_thr")
            row[f"nms_at_{thr:g}"], more = compare_nms(d[i], lab[i], b[i], cs[i], thr, post, rule)
            failures += [f"image {i}: {m}" for m in more]
        rows.append(row)
    return rows, failures


def _settings_failures(model: Any, pb: Probe, sidecar: dict | None) -> list[str]:
    post = PostProcessing.from_test_cfg(model.bbox_head.test_cfg).as_dict()
    failures = []
    default = pb.defaults.get("score_thr")
    if default is None or default.size != 1 or float(default.reshape(-1)[0]) != np.float32(post["score_thr"]):
        failures.append(f"the file's default score_thr {None if default is None else default.tolist()} is not "
                        f"the model's {post['score_thr']}")
    if sidecar is not None:
        wrong = [k for k, v in post.items() if sidecar["postprocessing"].get(k) != v]
        if wrong:
            failures.append(f"the sidecar's postprocessing {', '.join(wrong)} differ from the model's test_cfg")
    return failures


def _summary(rows: list[dict], failures: list[str]) -> tuple[dict, list[str]]:
    compared = sum(r.get("compared", 0) for r in rows)
    at_zero = sum(r.get("nms_at_0", {}).get("compared", 0) for r in rows)
    if not failures and compared == 0:
        failures.append("no candidate was compared; the check proves nothing")
    if not failures and at_zero == 0:
        failures.append("no detection was compared at score_thr 0; the check proves nothing")
    return {"images": rows, "candidates_compared": compared, "detections_compared_at_0": at_zero,
            "max_score_diff": max((r.get("max_score_diff", 0.0) for r in rows), default=None),
            "max_box_diff": max((r.get("max_box_diff", 0.0) for r in rows), default=None),
            "passed": not failures}, failures


def verify_inputs(model: Any, pb: Probe, x: np.ndarray, sizes: np.ndarray | None,
                  rule: ParityRule = ParityRule()) -> tuple[dict, list[str]]:
    """The file against mmdet's head on a preprocessed batch (``sizes``: each image's valid height and
    width, or None: the input's own, the file's default)."""
    shapes = [tuple(int(v) for v in s) for s in sizes] if sizes is not None else [tuple(x.shape[2:])] * len(x)
    rows, failures = check_batch(model, pb, x, sizes, torch.from_numpy(x), shapes, rule)
    entry, failures = _summary(rows, _settings_failures(model, pb, None) + failures)
    return {"rule": rule.as_dict(), **entry}, failures


def verify(model: Any, cfg: Any, pb: Probe, sidecar: dict, images: Sequence[np.ndarray],
           rule: ParityRule = ParityRule()) -> tuple[dict, list[str]]:
    """The file behind the sidecar's recipe against mmdet on decoded BGR images, one batch per image: the
    report entry and the failures (empty = parity)."""
    failures = _settings_failures(model, pb, sidecar)
    rows = []
    for k, image in enumerate(images):
        batch, metas = runtime_recipe.preprocess([image], sidecar["preprocessing"])
        ref_input, meta = mmdet_inputs(model, cfg, image)
        shape = tuple(int(v) for v in meta["img_shape"])
        if (batch.shape != tuple(ref_input.shape) or metas[0].resized != shape
                or not np.allclose(metas[0].scale, meta["scale_factor"], rtol=1e-6)
                or np.abs(batch - ref_input.numpy()).max() > rule.input_atol):
            failures.append(f"image {k}: the sidecar recipe's input ({batch.shape}, size {metas[0].resized}, scale "
                            f"{metas[0].scale}) differs from mmdet's pipeline ({tuple(ref_input.shape)}, {shape}, "
                            f"{tuple(meta['scale_factor'])})")
            continue
        sizes = np.asarray([metas[0].resized], np.float32)
        row, more = check_batch(model, pb, batch, sizes, ref_input, [shape], rule)
        rows.append({"image": k, **row[0]})
        failures += [f"image {k}: {m.split(': ', 1)[1]}" for m in more]
    entry, failures = _summary(rows, failures)
    return {"rule": rule.as_dict(), **entry}, [f"the file differs from mmdet: {f}" for f in failures]
