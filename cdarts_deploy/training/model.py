"""The network to train: built by :func:`backbones.factory.create_model_from_genotype`, and its drop-path schedule.

Cell genotypes become DARTS networks with the auxiliary tower when ``aux_weight > 0``; their drop path is set
per epoch (:func:`drop_path_at`).  Chain genotypes become timm MobileNetV3 networks, whose drop path is fixed at
construction (timm's ``drop_path_rate``).  nb201 genotypes become the NAS-Bench-201 network (width, cells per
stage, 32 px by default), which has no drop path.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

from backbones.factory import create_model_from_genotype, resolve_network
from cdarts_deploy.errors import UserError
from cdarts_deploy.genotype import CellGenotype, ChainGenotype, Genotype, Nb201Genotype

from .presets import TrainConfig

__all__ = ["ModelSpecError", "network_args", "build_model", "drop_path_at", "set_drop_path"]


class ModelSpecError(UserError):
    """Options that do not fit the genotype."""


def network_args(genotype: Genotype, cfg: TrainConfig, num_classes: int, natural_layout: str) -> dict[str, Any]:
    """The keyword arguments that rebuild the deployed network (no training-only parts) with
    ``create_model_from_genotype``; they are stored next to the checkpoints."""
    if isinstance(genotype, CellGenotype):
        layout = cfg.layout or natural_layout
        size = cfg.input_size or (32 if layout == "cifar" else 224)
        return dict(layout=layout, width=cfg.width, cells=cfg.cells, num_classes=num_classes, input_size=size)
    kind = "nb201" if isinstance(genotype, Nb201Genotype) else "chain"
    if cfg.aux_weight:
        raise ModelSpecError(f"--aux-weight applies to cell genotypes only ({kind} networks have no auxiliary tower); "
                             "pass --aux-weight 0")
    if kind == "nb201":  # the benchmark network: width C and cells per stage N, at its own input size (32 px)
        if cfg.layout is not None:
            raise ModelSpecError(f"--layout applies to cell genotypes only; {genotype.name or 'this genotype'} is an "
                                 "nb201 genotype")
        if cfg.drop_path:
            raise ModelSpecError("--drop-path applies to cell and chain genotypes; the NAS-Bench-201 network has no "
                                 "drop path, pass --drop-path 0")
        try:
            net = resolve_network(genotype, width=cfg.width, cells=cfg.cells, num_classes=num_classes)
        except ValueError as exc:
            raise ModelSpecError(str(exc)) from None
        return dict(width=net["width"], cells=net["cells"], num_classes=num_classes,
                    input_size=cfg.input_size or net["input_size"])
    for name in ("layout", "width", "cells"):
        if getattr(cfg, name) is not None:
            raise ModelSpecError(f"--{name} applies to cell genotypes only; {genotype.name or 'this genotype'} is a "
                                 "chain genotype")
    return dict(num_classes=num_classes, input_size=cfg.input_size or 224)


def build_model(genotype: Genotype, net_args: dict[str, Any], cfg: Optional[TrainConfig] = None) -> nn.Module:
    """The network of ``net_args``; with ``cfg``, the training extras (auxiliary tower, dropout, chain drop path)."""
    kwargs = dict(net_args)
    if cfg is not None:
        kwargs["drop_rate"] = cfg.drop_rate
        if isinstance(genotype, CellGenotype):
            kwargs["auxiliary"] = cfg.aux_weight > 0
        elif isinstance(genotype, ChainGenotype):
            kwargs["drop_path_rate"] = cfg.drop_path
    try:
        return create_model_from_genotype(genotype, **kwargs)
    except ValueError as exc:
        raise ModelSpecError(str(exc)) from None


def drop_path_at(cfg: TrainConfig, epoch: int) -> float:
    """Drop-path probability during ``epoch`` (0-based): ``drop_path * epoch / epochs``, as DARTS's retraining."""
    return cfg.drop_path * epoch / cfg.epochs


def set_drop_path(model: nn.Module, rate: float) -> None:
    """Set the cells' drop-path probability (cell networks only; chain networks keep timm's fixed rate)."""
    setter = getattr(model, "set_drop_path", None)
    if setter is not None:
        setter(rate)
