"""What every registered backbone shares about weights and input normalisation.

* :data:`CIFAR_MEAN` / :data:`CIFAR_STD`: per-channel statistics of the CIFAR-10 training images
  (the ImageNet ones are timm's ``IMAGENET_DEFAULT_MEAN`` / ``IMAGENET_DEFAULT_STD``).
* :func:`resolve_weight_source`: no weights are published for these models, so ``pretrained=True``
  needs a local file (``pretrained_cfg_overlay=dict(file=PATH)``); that file is read by
  :mod:`backbones.checkpoint_io` (``weights_only=True``, one-line errors) and handed to timm as a
  state_dict, so timm still adapts the classifier and input channels as for any pretrained model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .checkpoint_io import read_state_dict

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "WEIGHT_SOURCE_KEYS", "resolve_weight_source", "drop_loaded_state"]

CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)

#: pretrained_cfg keys that name a weight source; pretrained=True without one would keep random weights.
WEIGHT_SOURCE_KEYS = ("file", "url", "hf_hub_id", "state_dict")


def _with_file_read(cfg: dict[str, Any]) -> dict[str, Any]:
    if cfg.get("file") and not cfg.get("state_dict"):
        return dict(cfg, state_dict=read_state_dict(cfg["file"]))
    return cfg


def resolve_weight_source(variant: str, pretrained: bool, kwargs: dict[str, Any]) -> None:
    """Check that ``pretrained=True`` names weights, and read a local ``file`` through checkpoint_io.

    Updates ``kwargs`` (timm model arguments) in place.  Raises ``ValueError`` when no source is given
    and :class:`backbones.checkpoint_io.CheckpointError` for a file that cannot be read safely.
    """
    if not pretrained:
        return
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    cfg = kwargs.get("pretrained_cfg")
    cfg = cfg if isinstance(cfg, dict) else {}
    if not any(overlay.get(k) or cfg.get(k) for k in WEIGHT_SOURCE_KEYS):
        raise ValueError(
            f"{variant}: no published weights are bundled; pass pretrained_cfg_overlay=dict(file=PATH) "
            "to load a local checkpoint, or pretrained=False"
        )
    if overlay:
        kwargs["pretrained_cfg_overlay"] = _with_file_read(overlay)
    if cfg:
        kwargs["pretrained_cfg"] = _with_file_read(cfg)


def drop_loaded_state(model: nn.Module) -> nn.Module:
    """Forget the weights timm kept in ``pretrained_cfg['state_dict']`` once they are in the model."""
    for module in model.modules():
        cfg = getattr(module, "pretrained_cfg", None)
        if isinstance(cfg, dict):
            cfg.pop("state_dict", None)
    return model
