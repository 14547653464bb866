"""What a training run writes about its weights, all through write-then-rename and all ``weights_only``-loadable:

* ``last.pth`` / ``best.pth``: a plain ``state_dict`` of the deployed network (no auxiliary tower, no DDP
  prefix), loadable by ``cdarts-export --checkpoint``, ``timm.create_model(..., pretrained_cfg_overlay=dict(file=))``
  and the mm backbones' ``init_cfg``.
* ``resume.pth``: everything needed to continue exactly (model with tower, optimizer, EMA, epoch, log records)
  plus the run's identity (config, genotype, data); resuming with another identity is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from backbones.checkpoint_io import CheckpointError, load_into, read_checkpoint, refuse_non_finite
from cdarts_deploy.atomic_files import write_with

__all__ = ["TRAINING_ONLY_PREFIXES", "deploy_state_dict", "save_state", "save_resume", "load_resume",
           "restore_resume"]

# Modules that exist only while training: the deployed network has no auxiliary tower.
TRAINING_ONLY_PREFIXES = ("aux_head.",)
RESUME_FORMAT = "cdarts-train-resume/1"
# what save_resume writes and restore_resume reads, with the type each must have
RESUME_KEYS: dict[str, type | tuple[type, ...]] = dict(identity=str, epoch=int, model=dict, optimizer=dict,
                                                       best=dict, records=str)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def deploy_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The network's weights without training-only modules, detached, on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()
            if not k.startswith(TRAINING_ONLY_PREFIXES)}


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Atomically ``torch.save`` ``state`` to ``path``."""
    return write_with(path, lambda fh: torch.save(dict(state), fh))


def save_resume(path: str | os.PathLike, *, identity: dict[str, Any], epoch: int, model: nn.Module,
                optimizer: torch.optim.Optimizer, ema: Any, scaler: Any, best: dict[str, Any],
                records: list[dict[str, Any]]) -> Path:
    doc = dict(
        format=RESUME_FORMAT,
        identity=json.dumps(identity, sort_keys=True),
        epoch=epoch,
        model={k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        optimizer=optimizer.state_dict(),
        ema=ema.module.state_dict() if ema is not None else None,
        scaler=scaler.state_dict() if scaler is not None else None,
        best=dict(best),
        records=json.dumps(records),
    )
    return save_state(path, doc)


def load_resume(path: str | os.PathLike, identity: dict[str, Any]) -> dict[str, Any]:
    """The resume document at ``path``, refused unless it was written by a run with the same ``identity``."""
    doc = read_checkpoint(path, what="resume file")
    if not isinstance(doc, dict) or doc.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"resume file {path} was not written by cdarts-train; pass the run folder's resume.pth")
    wrong = [k for k, kind in RESUME_KEYS.items() if not isinstance(doc.get(k), kind)]
    if wrong:  # an older or damaged layout: continuing from it would fail half-way or silently differ
        raise CheckpointError(f"resume file {path} has an older or damaged layout (missing or wrong: "
                              f"{', '.join(wrong)}); start a new run (another --out, or --overwrite)")
    try:
        theirs = json.loads(doc["identity"])
        records = json.loads(doc["records"])
        best_top1, best_epoch = float(doc["best"]["top1"]), int(doc["best"]["epoch"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"resume file {path} has a damaged identity, log or best entry; start a new run "
                              "(another --out, or --overwrite)") from None
    if not isinstance(records, list):
        raise CheckpointError(f"resume file {path} has a damaged log; start a new run (another --out, or --overwrite)")
    if theirs != json.loads(json.dumps(identity, sort_keys=True)):
        diffs = _differences(theirs, json.loads(json.dumps(identity)))
        raise CheckpointError(f"resume file {path} belongs to another run ({'; '.join(diffs[:3])}); resume with the "
                              "same genotype, data and options, or start a new --out folder")
    refuse_non_finite(doc["model"], path)
    doc["records"], doc["best"] = records, dict(top1=best_top1, epoch=best_epoch)
    return doc


def restore_resume(doc: Mapping[str, Any], path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                   ema: Any, scaler: Any) -> None:
    """Load a :func:`load_resume` document into the run's objects; a part that does not fit is one line."""
    hint = "the resume file was written by another network; start a new run (another --out, or --overwrite)"
    load_into(unwrap(model), doc["model"], path, hint=hint)
    try:
        optimizer.load_state_dict(doc["optimizer"])
        if ema is not None and doc.get("ema") is not None:
            ema.module.load_state_dict(doc["ema"])
        if scaler is not None and doc.get("scaler") is not None:
            scaler.load_state_dict(doc["scaler"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"resume file {path}: its optimizer or EMA state does not fit this run "
                              f"({first[:100]}); start a new run (another --out, or --overwrite)") from None


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{where}.{k}" if where else k)
        return out
    return [] if old == new else [f"{where}: {old!r} then, {new!r} now"]
