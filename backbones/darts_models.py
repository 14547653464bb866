"""The DARTS-space networks of the genotype zoo, registered as timm models.

``timm.create_model('darts_v2_cifar')`` builds :class:`backbones.darts_net.DartsNet` with the zoo
genotype and the network the genotype's hints describe for that layout (a CIFAR genotype's hints say
nothing about its ImageNet network, which takes the ImageNet layout defaults instead).  No weights are
published: ``pretrained=True`` needs ``pretrained_cfg_overlay=dict(file=PATH)``.

:data:`CELL_FAMILY` is what cell genotypes contribute to the one genotype-to-module path in
:mod:`backbones.factory` (network hints, pretrained cfg, build); the registrations enter that path too.
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from cdarts_deploy import genotype as gt
from cdarts_deploy.genotype import LAYOUT_DEFAULTS, CellGenotype

from .darts_net import DartsNet
from .factory import create_registered, register_family
from .pretrained import CIFAR_MEAN, CIFAR_STD

__all__ = ["CELL_FAMILY", "CellFamily", "darts_pretrained_cfg"]


def darts_pretrained_cfg(layout: str, num_classes: int, input_size: int | None = None, **extra: Any) -> dict[str, Any]:
    """The timm ``pretrained_cfg`` of a DARTS network in ``layout`` (no weights are hosted anywhere)."""
    size = input_size or LAYOUT_DEFAULTS[layout]["input_size"]
    if layout == "cifar":
        cfg = dict(
            input_size=(3, size, size),
            pool_size=(size // 4, size // 4),
            crop_pct=1.0,
            interpolation="bilinear",
            mean=CIFAR_MEAN,
            std=CIFAR_STD,
            first_conv="stem.0",
        )
    else:
        cfg = dict(
            input_size=(3, size, size),
            pool_size=(size // 32, size // 32),
            crop_pct=0.875,
            interpolation="bilinear",
            mean=IMAGENET_DEFAULT_MEAN,
            std=IMAGENET_DEFAULT_STD,
            first_conv="stem0.0",
        )
    cfg.update(url="", num_classes=num_classes, classifier="classifier", license="apache-2.0")
    cfg.update(extra)
    return cfg


class CellFamily:
    """DARTS-cell genotypes as :class:`DartsNet` (the :class:`backbones.factory.ModelFamily` of cells)."""

    genotype_type = CellGenotype
    registered_args = ("layout", "width", "cells", "num_classes")

    def hints_to_kwargs(self, genotype: CellGenotype, given: dict[str, Any]) -> dict[str, Any]:
        """Layout, width, cells, classes and input size: explicit, then hints that describe the layout, then
        defaults."""
        hints = genotype.network
        layout = given.get("layout") or hints.layout or "cifar"
        if layout not in LAYOUT_DEFAULTS:
            raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUT_DEFAULTS)}")
        # A CIFAR genotype's "10 classes, C=36" say nothing about its ImageNet network.
        usable_hints = hints.layout in (None, layout)
        net: dict[str, Any] = dict(layout=layout)
        for key in ("width", "cells", "num_classes", "input_size"):
            explicit = given.get(key)
            hint = getattr(hints, key) if usable_hints else None
            net[key] = explicit if explicit is not None else hint if hint is not None else LAYOUT_DEFAULTS[layout][key]
        return net

    def variant(self, genotype: CellGenotype, net: dict[str, Any]) -> str:
        name = genotype.name or "darts"
        return name if name.endswith(f"_{net['layout']}") else f"{name}_{net['layout']}"

    def default_cfg(self, variant: str, genotype: CellGenotype, net: dict[str, Any],
                    given: dict[str, Any]) -> dict[str, Any]:
        return darts_pretrained_cfg(net["layout"], net["num_classes"], net["input_size"], architecture=variant)

    def build(self, variant: str, genotype: CellGenotype, net: dict[str, Any], pretrained: bool,
              kwargs: dict[str, Any]) -> DartsNet:
        """Features use timm's getter wrapper (``forward_intermediates``); ``feature_cls='hook'`` uses
        forward hooks on the ``feature_info`` modules instead."""
        num_levels = 4 if net["layout"] == "imagenet" else 3  # see DartsNet.feature_info
        feature_cfg = dict(out_indices=tuple(range(num_levels)), feature_cls="getter")
        if kwargs.get("feature_cls") == "hook":
            feature_cfg["no_rewrite"] = True
        network = {k: net[k] for k in ("layout", "width", "cells", "num_classes")}
        return build_model_with_cfg(
            DartsNet, variant, pretrained, genotype=genotype, feature_cfg=feature_cfg, **network, **kwargs
        )


CELL_FAMILY = register_family(CellFamily())


def _zoo_cfg(zoo_name: str, layout: str) -> dict[str, Any]:
    net = CELL_FAMILY.hints_to_kwargs(gt.load(zoo_name), dict(layout=layout))
    return darts_pretrained_cfg(layout, net["num_classes"], net["input_size"])


def _create(variant: str, zoo_name: str, layout: str, pretrained: bool, **kwargs: Any) -> DartsNet:
    """Build zoo genotype ``zoo_name`` in ``layout``; explicit ``kwargs`` override the genotype's hints."""
    return create_registered(variant, gt.load(zoo_name), pretrained, kwargs, layout=layout)


default_cfgs = generate_default_cfgs(
    {
        "cdarts_cifar": _zoo_cfg("cdarts_cifar", "cifar"),
        "cdarts_imagenet": _zoo_cfg("cdarts_imagenet", "imagenet"),
        "pcdarts_cifar": _zoo_cfg("pcdarts_cifar", "cifar"),
        "pcdarts_imagenet": _zoo_cfg("pcdarts_imagenet", "imagenet"),
        "darts_v1_cifar": _zoo_cfg("darts_v1", "cifar"),
        "darts_v1_imagenet": _zoo_cfg("darts_v1", "imagenet"),
        "darts_v2_cifar": _zoo_cfg("darts_v2", "cifar"),
        "darts_v2_imagenet": _zoo_cfg("darts_v2", "imagenet"),
        "pdarts_cifar": _zoo_cfg("pdarts", "cifar"),
        "pdarts_imagenet": _zoo_cfg("pdarts", "imagenet"),
    }
)


@register_model
def cdarts_cifar(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """CDARTS cells searched on CIFAR-10; CIFAR network (C=36, 20 cells, 10 classes)."""
    return _create("cdarts_cifar", "cdarts_cifar", "cifar", pretrained, **kwargs)


@register_model
def cdarts_imagenet(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """CDARTS cells searched on ImageNet; ImageNet network (C=48, 14 cells, 1000 classes)."""
    return _create("cdarts_imagenet", "cdarts_imagenet", "imagenet", pretrained, **kwargs)


@register_model
def pcdarts_cifar(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """PC-DARTS cells searched on CIFAR-10; CIFAR network (C=36, 20 cells, 10 classes)."""
    return _create("pcdarts_cifar", "pcdarts_cifar", "cifar", pretrained, **kwargs)


@register_model
def pcdarts_imagenet(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """PC-DARTS cells searched on ImageNet; ImageNet network (C=48, 14 cells, 1000 classes)."""
    return _create("pcdarts_imagenet", "pcdarts_imagenet", "imagenet", pretrained, **kwargs)


@register_model
def darts_v1_cifar(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """First-order DARTS cells; CIFAR network (C=36, 20 cells, 10 classes)."""
    return _create("darts_v1_cifar", "darts_v1", "cifar", pretrained, **kwargs)


@register_model
def darts_v1_imagenet(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """First-order DARTS cells; ImageNet network (C=48, 14 cells, 1000 classes)."""
    return _create("darts_v1_imagenet", "darts_v1", "imagenet", pretrained, **kwargs)


@register_model
def darts_v2_cifar(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """Second-order DARTS cells; CIFAR network (C=36, 20 cells, 10 classes; 3,349,342 parameters)."""
    return _create("darts_v2_cifar", "darts_v2", "cifar", pretrained, **kwargs)


@register_model
def darts_v2_imagenet(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """Second-order DARTS cells; ImageNet network (C=48, 14 cells, 1000 classes; 4,718,752 parameters)."""
    return _create("darts_v2_imagenet", "darts_v2", "imagenet", pretrained, **kwargs)


@register_model
def pdarts_cifar(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """P-DARTS cells; CIFAR network (C=36, 20 cells, 10 classes)."""
    return _create("pdarts_cifar", "pdarts", "cifar", pretrained, **kwargs)


@register_model
def pdarts_imagenet(pretrained: bool = False, **kwargs: Any) -> DartsNet:
    """P-DARTS cells; ImageNet network (C=48, 14 cells, 1000 classes)."""
    return _create("pdarts_imagenet", "pdarts", "imagenet", pretrained, **kwargs)
