"""The arg-max child of the chain supernet: its genotype, its timm model, and weight inheritance.

The child is built with timm's EfficientNet builder (``backbones.chain_net.create_chain_model``)
from a ``ChainGenotype``; every parameter and BN buffer is then copied from the supernet --
fixed parts key by key (the supernet wraps a timm model of the same base), searchable
blocks from the chosen candidate's slices of the shared weights.
"""

from __future__ import annotations

import torch
from torch import nn

from backbones.chain_net import create_chain_model
from cdarts_deploy.genotype import ChainGenotype, apply_choices

from .chain_supernet import ChainSupernet, MixedInvertedResidual

__all__ = ["derive_genotype", "build_child", "inherit_weights"]


def derive_genotype(
    supernet: ChainSupernet, unit_choices: list[int] | None = None, name: str = "cdarts_chain_search"
) -> ChainGenotype:
    """The child genotype for ``unit_choices`` (default: arg-max of the architecture weights)."""
    choices = supernet.argmax_choices() if unit_choices is None else list(unit_choices)
    arch = apply_choices(supernet.base, supernet.choices_per_stage(choices), source="<supernet>")
    return ChainGenotype.from_arch_strings(arch, name=name, network=supernet.network)


@torch.no_grad()
def inherit_weights(child: nn.Module, supernet: ChainSupernet, unit_choices: list[int]) -> None:
    """Copy the supernet's weights for ``unit_choices`` into ``child`` (every key, shapes checked)."""
    if len(unit_choices) != len(supernet.units):
        raise ValueError(f"got {len(unit_choices)} choices, expected one per searchable block ({len(supernet.units)})")
    source: dict[str, torch.Tensor] = dict(supernet.net.state_dict())
    for unit, choice in zip(supernet.units, unit_choices):
        for m in unit.modules:
            mixed = supernet.net.blocks[unit.stage][m]
            assert isinstance(mixed, MixedInvertedResidual)
            prefix = f"blocks.{unit.stage}.{m}."
            for key, t in mixed.candidate_weights(choice).items():
                source[prefix + key] = t
    target = child.state_dict()
    missing = [k for k in target if k not in source]
    if missing:
        raise RuntimeError(f"supernet has no weights for child keys {missing[:5]}")
    for key, t in target.items():
        s = source[key]
        if s.shape != t.shape:
            raise RuntimeError(f"{key}: supernet slice {tuple(s.shape)} does not fit child {tuple(t.shape)}")
        t.copy_(s.detach())


def build_child(
    supernet: ChainSupernet, unit_choices: list[int] | None = None, name: str = "cdarts_chain_search"
) -> tuple[ChainGenotype, nn.Module]:
    """The (genotype, timm model) of a child, with weights inherited from the supernet."""
    choices = supernet.argmax_choices() if unit_choices is None else list(unit_choices)
    genotype = derive_genotype(supernet, choices, name=name)
    child = create_chain_model(genotype, num_classes=supernet.network.num_classes)
    device = supernet.alphas.device
    child.to(device)
    inherit_weights(child, supernet, choices)
    return genotype, child
