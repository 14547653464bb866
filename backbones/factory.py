"""Build a model from any genotype: a file path, a zoo name or a genotype object.

Cell genotypes become :class:`backbones.darts_net.DartsNet` models, chain genotypes timm MobileNetV3
models (:func:`backbones.chain_net.create_chain_model`); both through timm's ``build_model_with_cfg``,
so timm keyword arguments (``features_only``, ``out_indices``, ``drop_path_rate``,
``pretrained_cfg_overlay=dict(file=...)``, ...) work as for ``timm.create_model``.

Network size of a cell genotype: :func:`backbones.darts_models.resolve_cell_network` (the explicit
arguments, then the genotype's network hints when they describe the chosen layout -- a CIFAR genotype's
"10 classes, C=36" say nothing about its ImageNet network -- then the layout defaults).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from torch import nn

from cdarts_deploy import genotype as gt
from cdarts_deploy.genotype import CHAIN_DEFAULTS, CellGenotype, ChainGenotype, Genotype

from .chain_net import chain_pretrained_cfg, create_chain_model
from .darts_models import create_darts_net, darts_pretrained_cfg, resolve_cell_network

__all__ = ["create_model_from_genotype", "resolve_cell_network"]


def _variant_name(genotype: CellGenotype, layout: str) -> str:
    name = genotype.name or "darts"
    return name if name.endswith(f"_{layout}") else f"{name}_{layout}"


def create_model_from_genotype(
    genotype: Union[str, os.PathLike, Genotype],
    *,
    layout: Optional[str] = None,
    width: Optional[int] = None,
    cells: Optional[int] = None,
    num_classes: Optional[int] = None,
    input_size: Optional[int] = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build the network of ``genotype`` (path, zoo name or object) as a timm model.

    ``layout``, ``width`` and ``cells`` apply to cell genotypes only; ``input_size`` (a side length) sets
    the ``pretrained_cfg`` input size.  Raises :class:`cdarts_deploy.genotype.GenotypeError` for an
    unreadable or invalid genotype and ``ValueError`` for arguments that do not fit it.
    """
    if not isinstance(genotype, (CellGenotype, ChainGenotype)):
        genotype = gt.load(genotype)

    if isinstance(genotype, ChainGenotype):
        given = [k for k, v in (("layout", layout), ("width", width), ("cells", cells)) if v is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} can only be set for cell (DARTS) genotypes; "
                f"{genotype.name or 'this genotype'} is a chain genotype"
            )
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        if input_size is not None and kwargs.get("pretrained_cfg") is None:
            net = genotype.network
            kwargs["pretrained_cfg"] = chain_pretrained_cfg(
                num_classes=next(n for n in (num_classes, net.num_classes, CHAIN_DEFAULTS["num_classes"]) if n is not None),
                input_size=input_size,
                architecture=genotype.name or "cdarts_chain",
            )
        return create_chain_model(genotype, pretrained=pretrained, **kwargs)

    net = resolve_cell_network(genotype, layout, width, cells, num_classes, input_size)
    variant = _variant_name(genotype, net["layout"])
    if kwargs.get("pretrained_cfg") is None:
        kwargs["pretrained_cfg"] = darts_pretrained_cfg(
            net["layout"], net["num_classes"], net["input_size"], architecture=variant
        )
    return create_darts_net(
        variant,
        genotype,
        pretrained,
        layout=net["layout"],
        width=net["width"],
        cells=net["cells"],
        num_classes=net["num_classes"],
        **kwargs,
    )
