"""Does an end-to-end detector artifact (ONNX + sidecar) give mmdet's own ``predict`` results?

The reference is the mmdet model run through the config's test pipeline and ``test_step`` (boxes rescaled
to the original image).  The candidate is the ONNX graph in ONNX Runtime behind the sidecar's recipe
(:mod:`downstream.runtime_recipe`), which knows nothing of mmdet.  Both give, per image, boxes in original
pixels, scores and labels.  Every reference detection must meet one candidate detection of the same label
with IoU > ``iou_min`` and a score within ``score_atol``, and every candidate detection must be met.

Near-ties are the one allowance: an unmatched detection is counted as ``tied`` rather than failed, at most
``max_tied`` of them per image, when the two sides could part on it by rounding alone:

* its score is within ``score_atol`` of where the other side stopped (its ``max_per_img``-th score, or the
  score threshold), or of an unmatched detection of the same class that overlaps it by more than the NMS
  threshold (the two sides kept the other one of a tied pair);
* it overlaps a higher-scored detection of its own side and class by an IoU within ``nms_iou_atol`` of the
  NMS threshold (the other side's NMS suppressed it: barely-regressed anchors overlap by exactly 1/2, 1/3 ...);
* it overlaps by more than the NMS threshold a higher-scored unmatched detection of the other side and class
  (that detection, kept only there, suppressed it there).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from downstream import runtime_recipe


@dataclass(frozen=True)
class ParityRule:
    iou_min: float = 0.99
    score_atol: float = 1e-4
    max_tied: int = 2
    nms_iou_atol: float = 0.01

    def as_dict(self) -> dict:
        return {"iou_min": self.iou_min, "score_atol": self.score_atol, "max_tied_per_image": self.max_tied,
                "nms_iou_atol": self.nms_iou_atol,
                "rule": "each detection of either side meets one of the other with the same label, IoU > iou_min "
                        "and |score difference| <= score_atol; unmatched near-ties (score within score_atol of the "
                        "other side's cut-off or of an overlapping unmatched detection; IoU with a higher-scored "
                        "detection of its side within nms_iou_atol of the NMS threshold; suppressed by a detection "
                        "only the other side kept) allowed up to the limit"}


def reference_detections(model: Any, cfg: Any, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """mmdet's ``predict`` (through ``test_step``) on decoded BGR images, one batch per image."""
    from mmcv.transforms import Compose
    from mmengine.registry import DefaultScope

    steps = copy.deepcopy(list(cfg.test_dataloader.dataset.pipeline))
    steps = [s for s in steps if str(s["type"]).split(".")[-1] != "LoadAnnotations"]
    steps[0] = dict(type="mmdet.LoadImageFromNDArray")  # as mmdet.apis.inference_detector does
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmdet")):
        pipeline = Compose(steps)
        out = []
        for i, image in enumerate(images):
            data = pipeline(dict(img=image, img_id=i))
            with torch.no_grad():
                sample = model.test_step(dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]]))[0]
            pred = sample.pred_instances
            out.append({"boxes": pred.bboxes.numpy().astype(np.float32), "scores": pred.scores.numpy(),
                        "labels": pred.labels.numpy().astype(np.int64)})
    return out


def candidate_detections(session: Any, sidecar: dict, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The artifact behind the sidecar recipe, one batch per image (as the reference)."""
    return [runtime_recipe.detect(session, sidecar, [image])[0] for image in images]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of corner boxes, len(a) x len(b)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), (np.abs(a[:, None] - b[None]).max(2) == 0) * 1.0)


def _match(ref: dict, got: dict, rule: ParityRule) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Greedy one-to-one matching, best reference scores first; returns pairs and the IoU matrix."""
    iou = box_iou(ref["boxes"], got["boxes"])
    ok = ((ref["labels"][:, None] == got["labels"][None, :]) & (iou > rule.iou_min)
          & (np.abs(ref["scores"][:, None] - got["scores"][None, :]) <= rule.score_atol))
    used = np.zeros(len(got["scores"]), bool)
    pairs = []
    for i in np.argsort(-ref["scores"], kind="stable"):
        options = np.flatnonzero(ok[i] & ~used)
        if options.size:
            j = options[np.argmax(iou[i, options])]
            used[j] = True
            pairs.append((int(i), int(j)))
    return pairs, iou


def _cut(side: dict, post: dict) -> float:
    """Where a side stopped: its lowest score when it is full, else the score threshold."""
    scores = side["scores"]
    return float(scores.min()) if len(scores) >= post["max_per_img"] else float(post["score_thr"])


def _tied(idx: np.ndarray, mine: dict, other_unmatched: np.ndarray, other: dict, other_cut: float, iou: np.ndarray,
          post: dict, rule: ParityRule) -> np.ndarray:
    """Which unmatched detections of one side are near-ties (see the module docstring); ``iou`` holds their
    IoU with every detection of the other side."""
    tied = np.zeros(len(idx), bool)
    thr = post["iou_thr"]
    own_iou = box_iou(mine["boxes"][idx], mine["boxes"]) if len(idx) else np.zeros((0, 0))
    for n, i in enumerate(idx):
        s, label = mine["scores"][i], mine["labels"][i]
        if s <= other_cut + rule.score_atol:
            tied[n] = True
            continue
        stronger_own = (mine["labels"] == label) & (mine["scores"] > s)
        at_nms_threshold = bool((stronger_own & (np.abs(own_iou[n] - thr) <= rule.nms_iou_atol)).any())
        partners = [j for j in other_unmatched if other["labels"][j] == label and iou[n, j] > thr
                    and (abs(other["scores"][j] - s) <= rule.score_atol or other["scores"][j] > s)]
        tied[n] = at_nms_threshold or bool(partners)
    return tied


def compare(reference: Sequence[dict], candidate: Sequence[dict], post: dict,
            rule: ParityRule = ParityRule()) -> tuple[dict, list[str]]:
    """Per-image matching of reference and candidate detections: the report entry and the failures."""
    failures: list[str] = []
    rows = []
    all_iou, all_diff = [], []
    for k, (ref, got) in enumerate(zip(reference, candidate)):
        pairs, iou = _match(ref, got, rule)
        ri = np.setdiff1d(np.arange(len(ref["scores"])), [p[0] for p in pairs])
        gi = np.setdiff1d(np.arange(len(got["scores"])), [p[1] for p in pairs])
        ref_tied = _tied(ri, ref, gi, got, _cut(got, post), iou[ri] if len(ri) else iou[:0], post, rule)
        got_tied = _tied(gi, got, ri, ref, _cut(ref, post), iou.T[gi] if len(gi) else iou.T[:0], post, rule)
        for i, j in pairs:
            all_iou.append(iou[i, j])
            all_diff.append(abs(float(ref["scores"][i]) - float(got["scores"][j])))
        n_tied = int(ref_tied.sum() + got_tied.sum())
        rows.append({"image": k, "reference": len(ref["scores"]), "candidate": len(got["scores"]),
                     "matched": len(pairs), "tied": n_tied,
                     "unmatched_reference": int((~ref_tied).sum()), "unmatched_candidate": int((~got_tied).sum())})
        if (~ref_tied).any() or (~got_tied).any() or n_tied > rule.max_tied:
            worst = (f"a reference detection (label {ref['labels'][ri[~ref_tied][0]]}, score "
                     f"{ref['scores'][ri[~ref_tied][0]]:.4f}) has no match" if (~ref_tied).any()
                     else f"{int((~got_tied).sum())} candidate detection(s) have no reference" if (~got_tied).any()
                     else f"{n_tied} near-tied detections exceed the limit of {rule.max_tied}")
            failures.append(f"image {k}: {len(ref['scores'])} reference vs {len(got['scores'])} candidate detections, "
                            f"{len(pairs)} matched; {worst}")
    entry = {
        "images": rows,
        "detections_compared": int(sum(r["matched"] for r in rows)),
        "min_iou": float(min(all_iou)) if all_iou else None,
        "mean_iou": float(np.mean(all_iou)) if all_iou else None,
        "max_score_diff": float(max(all_diff)) if all_diff else None,
        "passed": not failures,
    }
    return entry, failures


def verify(model: Any, cfg: Any, session: Any, sidecar: dict, images: Sequence[np.ndarray],
           rule: ParityRule = ParityRule()) -> tuple[dict, list[str]]:
    """mmdet ``predict`` vs the artifact on ``images``: the report entry and the failures (empty = parity)."""
    reference = reference_detections(model, cfg, images)
    candidate = candidate_detections(session, sidecar, images)
    entry, failures = compare(reference, candidate, sidecar["postprocessing"], rule)
    entry = {"rule": rule.as_dict(), **entry}
    if not any(len(r["scores"]) for r in reference) and not any(len(c["scores"]) for c in candidate):
        entry["note"] = "no detections above score_thr on these images; the comparison proves little"
    return entry, [f"end-to-end detections differ from mmdet's predict: {f}" for f in failures]
