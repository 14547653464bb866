"""Backbones: DARTS-cell and chain (MBConv) networks as timm models.

Importing this package registers every model with timm (``timm.create_model('cdarts_cifar')``,
``'cdarts_imagenet'``, ``'darts_v2_cifar'``, ``'cdarts_a'``, ...) and each network family with the
one genotype-to-module path in :mod:`backbones.factory`: the cell networks in
:mod:`backbones.darts_models`, the chain networks in :mod:`backbones.chain_net`, the NAS-Bench-201
networks in :mod:`backbones.nb201_net`.  Sizes:
:mod:`backbones.complexity` (``python -m backbones.complexity`` prints a table).
"""

from . import chain_net, darts_models, nb201_net  # noqa: F401  (registers the timm models and the network families)
from .factory import create_model_from_genotype

__all__ = ["create_model_from_genotype"]
