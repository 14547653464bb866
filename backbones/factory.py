"""The one path from a genotype to a module: network hints -> pretrained cfg -> weights -> build.

Every way of building a network ends here: :func:`create_model_from_genotype` (a file path, a zoo name
or a genotype object), the timm registrations (``timm.create_model('cdarts_b')`` calls
:func:`create_registered`), the mm backbones, the deployment and training commands.  The order lives in
this module only (as in timm's ``build_model_with_cfg``); what differs between networks is a
:class:`ModelFamily`, one per genotype kind, registered by the module that defines the family:

* cell genotypes: :data:`backbones.darts_models.CELL_FAMILY` (:class:`backbones.darts_net.DartsNet`);
* chain genotypes: :data:`backbones.chain_net.CHAIN_FAMILY` (timm MobileNetV3);
* nb201 genotypes: :data:`backbones.nb201_net.NB201_FAMILY` (:class:`backbones.nb201_net.Nb201Net`).

Each family turns explicit arguments and the genotype's network hints into the concrete network
(``hints_to_kwargs``), names its timm ``pretrained_cfg`` (``default_cfg``) and builds the module with
timm's ``build_model_with_cfg`` (``build``), so timm keyword arguments (``features_only``,
``out_indices``, ``drop_path_rate``, ``pretrained_cfg_overlay=dict(file=...)``, ...) work as for
``timm.create_model``.  A local weight file is read here, through :mod:`backbones.checkpoint_io`
only, and handed to timm as the cfg's ``state_dict`` (timm still adapts the classifier and input
channels as for any pretrained model).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Protocol, Union

from torch import nn

from cdarts_deploy import genotype as gt
from cdarts_deploy.genotype import CellGenotype, ChainGenotype, Genotype, Nb201Genotype

from .checkpoint_io import read_state_dict

__all__ = [
    "WEIGHT_SOURCE_KEYS",
    "ModelFamily",
    "create_model_from_genotype",
    "create_registered",
    "family_of",
    "register_family",
    "resolve_cell_network",
    "resolve_network",
]

#: pretrained_cfg keys that name a weight source; pretrained=True without one would keep random weights.
WEIGHT_SOURCE_KEYS = ("file", "url", "hf_hub_id", "state_dict")

#: The network arguments :func:`create_model_from_genotype` takes by name (``None``: not given).
NETWORK_ARGS = ("layout", "width", "cells", "num_classes", "input_size")


class ModelFamily(Protocol):
    """What one kind of genotype contributes to the path; the order is :func:`_build`'s."""

    #: The genotype class this family builds.
    genotype_type: type
    #: The network arguments a timm registration of this family takes from its keyword arguments.
    registered_args: tuple[str, ...]

    def hints_to_kwargs(self, genotype: Genotype, given: dict[str, Any]) -> dict[str, Any]:
        """The concrete network: ``given`` (explicit, ``None`` = not given), then hints, then defaults.

        Raises ``ValueError`` for given arguments that do not apply to this family.
        """
        ...

    def variant(self, genotype: Genotype, net: dict[str, Any]) -> str:
        """The timm variant name of ``genotype`` built as ``net``."""
        ...

    def default_cfg(self, variant: str, genotype: Genotype, net: dict[str, Any],
                    given: dict[str, Any]) -> dict[str, Any]:
        """The timm ``pretrained_cfg`` when the caller passes none."""
        ...

    def build(self, variant: str, genotype: Genotype, net: dict[str, Any], pretrained: bool,
              kwargs: dict[str, Any]) -> nn.Module:
        """The module, through timm's ``build_model_with_cfg`` (which applies a cfg ``state_dict``)."""
        ...


_FAMILIES: dict[type, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Make ``family`` the builder of its genotype class (called by the module defining it)."""
    _FAMILIES[family.genotype_type] = family
    return family


def family_of(genotype: Genotype) -> ModelFamily:
    """The registered family that builds ``genotype``."""
    for cls, family in _FAMILIES.items():
        if isinstance(genotype, cls):
            return family
    raise TypeError(f"no network family builds a {type(genotype).__name__}")


def _load(genotype: Union[str, os.PathLike, Genotype]) -> Genotype:
    return genotype if isinstance(genotype, (CellGenotype, ChainGenotype, Nb201Genotype)) else gt.load(genotype)


def resolve_network(genotype: Union[str, os.PathLike, Genotype], **given: Any) -> dict[str, Any]:
    """The concrete network ``genotype`` is built as, for explicit ``given`` :data:`NETWORK_ARGS`.

    Cell genotypes: layout, width, cells, num_classes, input_size; chain genotypes: num_classes,
    input_size; nb201 genotypes: width, cells (per stage), num_classes, input_size.  Raises ``ValueError``
    for arguments that do not fit the genotype.
    """
    genotype = _load(genotype)
    return family_of(genotype).hints_to_kwargs(genotype, {k: given.get(k) for k in NETWORK_ARGS})


def resolve_cell_network(
    genotype: CellGenotype,
    layout: Optional[str] = None,
    width: Optional[int] = None,
    cells: Optional[int] = None,
    num_classes: Optional[int] = None,
    input_size: Optional[int] = None,
) -> dict[str, Any]:
    """The layout, width, cells, classes and input size a cell genotype is built with.

    Most specific first: the explicit arguments, then the genotype's network hints (only when they
    describe the chosen layout or no layout -- a CIFAR genotype's "10 classes, C=36" say nothing
    about its ImageNet network), then :data:`cdarts_deploy.genotype.LAYOUT_DEFAULTS`.
    """
    if not isinstance(genotype, CellGenotype):
        raise TypeError(f"resolve_cell_network needs a cell genotype, got {type(genotype).__name__}")
    return resolve_network(genotype, layout=layout, width=width, cells=cells, num_classes=num_classes,
                           input_size=input_size)


def _read_weight_source(variant: str, pretrained: bool, kwargs: dict[str, Any]) -> None:
    """Check that ``pretrained=True`` names weights; read a local ``file`` into the cfg's ``state_dict``.

    Reading here (not in timm) keeps every checkpoint behind checkpoint_io's ``weights_only=True``
    and one-line errors.  Updates ``kwargs`` (timm model arguments) in place.
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
    for key, source in (("pretrained_cfg_overlay", overlay), ("pretrained_cfg", cfg)):
        if source.get("file") and not source.get("state_dict"):
            kwargs[key] = dict(source, state_dict=read_state_dict(source["file"]))


def _drop_loaded_state(model: nn.Module) -> nn.Module:
    """Forget the weights timm kept in ``pretrained_cfg['state_dict']`` once they are in the model."""
    for module in model.modules():
        cfg = getattr(module, "pretrained_cfg", None)
        if isinstance(cfg, dict):
            cfg.pop("state_dict", None)
    return model


def _build(family: ModelFamily, genotype: Genotype, variant: Optional[str], given: dict[str, Any],
           pretrained: bool, kwargs: dict[str, Any], *, cfg_from_registry: bool) -> nn.Module:
    """The path, in order: hints -> pretrained cfg -> weight source -> build (timm loads the weights)."""
    net = family.hints_to_kwargs(genotype, given)
    variant = variant or family.variant(genotype, net)
    # A registered variant's cfg is timm's registry entry (resolved inside build_model_with_cfg).
    if not cfg_from_registry and kwargs.get("pretrained_cfg") is None:
        kwargs["pretrained_cfg"] = family.default_cfg(variant, genotype, net, given)
    _read_weight_source(variant, pretrained, kwargs)
    return _drop_loaded_state(family.build(variant, genotype, net, pretrained, kwargs))


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

    ``layout`` applies to cell genotypes only, ``width`` and ``cells`` to cell and nb201 genotypes;
    ``input_size`` (a side length) sets the ``pretrained_cfg`` input size.  Raises
    :class:`cdarts_deploy.genotype.GenotypeError` for an unreadable or invalid genotype and ``ValueError``
    for arguments that do not fit it.
    """
    genotype = _load(genotype)
    given = dict(layout=layout, width=width, cells=cells, num_classes=num_classes, input_size=input_size)
    return _build(family_of(genotype), genotype, None, given, pretrained, kwargs, cfg_from_registry=False)


def create_registered(variant: str, genotype: Genotype, pretrained: bool, kwargs: dict[str, Any],
                      **defaults: Any) -> nn.Module:
    """The body of a timm registration: ``variant`` built from ``genotype``.

    The family's network arguments found in ``kwargs`` (e.g. ``num_classes``, ``width``) override
    ``defaults`` (e.g. the variant's ``layout``), which override the genotype's hints.
    """
    family = family_of(genotype)
    given: dict[str, Any] = {k: None for k in NETWORK_ARGS}
    given.update(defaults)
    for key in family.registered_args:
        if kwargs.get(key) is not None:
            given[key] = kwargs.pop(key)
    return _build(family, genotype, variant, given, pretrained, dict(kwargs), cfg_from_registry=True)
