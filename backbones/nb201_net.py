"""NAS-Bench-201 networks from ``nb201`` genotypes, registered as timm models.

The benchmark's network (Dong & Yang, ICLR 2020): a 3x3 conv stem (C=16) with BN; three stages of
N=5 copies of the searched cell at C, 2C, 4C channels, joined by residual reduction blocks
(ReLU-conv3x3-BN stride 2, ReLU-conv3x3-BN, plus a 2x2 average pool and 1x1 conv shortcut); then
BN, ReLU, global average pool and a linear classifier.  Inside a cell every edge keeps its
operation, ``none`` included (it contributes zeros), and the cell's output is its last node.
Parameter counts equal the benchmark records' (``params``) for the same number of classes.

Feature levels (``features_only=True``): the last cell of each stage, at reductions 1, 2, 4 (the
last level after the final BN-ReLU).  :data:`NB201_FAMILY` is what nb201 genotypes contribute to
the one genotype-to-module path in :mod:`backbones.factory`.
"""

# No ``from __future__ import annotations``: TorchScript compiles forward() and cannot resolve string annotations.

from typing import Any, Optional, Union

import torch
import torch.utils.checkpoint
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from cdarts_deploy.genotype import NB201_DEFAULTS, Nb201Genotype, nb201_from_string

from .classifier_api import TimmClassifierApi
from .darts_ops import Identity, ReLUConvBN, Zero
from .factory import create_model_from_genotype, create_registered, register_family
from .pretrained import CIFAR_MEAN, CIFAR_STD

__all__ = ["NB201_FAMILY", "NB201_RESNET", "Nb201Family", "Nb201Net", "create_nb201_model", "nb201_op"]

#: The residual cell x + conv3x3(conv3x3(x)) written in the space (the benchmark's ResNet).
NB201_RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


def nb201_op(name: str, channels: int) -> nn.Module:
    """One edge operation at stride 1 (ReLU-Conv-BN convolutions, as the benchmark builds them)."""
    if name == "none":
        return Zero(1)
    if name == "skip_connect":
        return Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 operation {name!r}")


class Nb201Cell(nn.Module):
    """Node i sums one operation on each node before it; the output is the last node."""

    def __init__(self, nodes: tuple, channels: int) -> None:
        super().__init__()
        ops, sources, first, last = [], [], [], []
        for node in nodes:
            for src, name in enumerate(node):
                ops.append(nb201_op(name, channels))
                sources.append(src)
                first.append(src == 0)
                last.append(src == len(node) - 1)
        self.edges = nn.ModuleList(ops)
        # plain lists of constants: TorchScript reads them as List[int] / List[bool]
        self.sources = sources
        self.first = first
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        node = x
        for e, op in enumerate(self.edges):
            out = op(states[self.sources[e]])
            node = out if self.first[e] else node + out
            if self.last[e]:
                states.append(node)
        return states[-1]


class ResidualReduction(nn.Module):
    """The benchmark's reduction block: two ReLU-Conv-BN 3x3 (the first at stride 2) plus a pooled 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class Nb201Net(TimmClassifierApi, nn.Module):
    """The NAS-Bench-201 network of one genotype, following timm's model conventions."""

    def __init__(
        self,
        genotype: Nb201Genotype,
        width: Optional[int] = None,
        cells: Optional[int] = None,
        num_classes: Optional[int] = None,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(genotype, Nb201Genotype):
            raise TypeError(f"Nb201Net needs an nb201 genotype, got {type(genotype).__name__}")
        width = NB201_DEFAULTS["width"] if width is None else width
        cells = NB201_DEFAULTS["cells"] if cells is None else cells
        num_classes = NB201_DEFAULTS["num_classes"] if num_classes is None else num_classes
        if width < 1 or cells < 1:
            raise ValueError(f"width and cells must be positive, got width {width}, cells {cells}")
        self.genotype = genotype
        self.width, self.num_cells, self.num_classes = width, cells, num_classes
        self.in_chans, self.drop_rate = in_chans, drop_rate
        self.grad_checkpointing = False

        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        blocks: list[nn.Module] = []
        self.feature_info = []
        channels = width
        for stage in range(3):
            if stage:
                blocks.append(ResidualReduction(channels, channels * 2))
                channels *= 2
            for _ in range(cells):
                blocks.append(Nb201Cell(genotype.nodes, channels))
            if stage < 2:
                tap = f"cells.{len(blocks) - 1}"
                self.feature_info.append(dict(num_chs=channels, reduction=2 ** stage, module=tap))
        self.cells = nn.ModuleList(blocks)
        self.feature_info.append(dict(num_chs=channels, reduction=4, module="lastact"))
        self.feature_blocks = [cells - 1, 2 * cells, len(blocks) - 1]
        self.lastact = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.num_features = self.head_hidden_size = channels
        self.global_pool, self.head_drop, self.classifier = create_classifier(
            channels, num_classes, pool_type=global_pool, drop_rate=drop_rate
        )
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.cells:
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.lastact(x)

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, list[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
        """Features at the ``feature_info`` levels (timm's intermediate-feature API)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported, expected 'NCHW'")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        wanted = {self.feature_blocks[i] for i in take_indices}
        last_block = self.feature_blocks[max_index] if stop_early or intermediates_only else len(self.cells) - 1
        intermediates: list[torch.Tensor] = []
        x = self.stem(x)
        for i, block in enumerate(self.cells):
            if i > last_block:
                break
            x = block(x)
            if i == len(self.cells) - 1:
                x = self.lastact(x)
            if i in wanted:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: Union[int, list[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        keep = self.feature_blocks[max_index] + 1
        if keep < len(self.cells):
            self.cells = self.cells[:keep]
            self.lastact = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            prune_head = True
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def nb201_pretrained_cfg(num_classes: int, input_size: int, **extra: Any) -> dict[str, Any]:
    """The timm ``pretrained_cfg`` of a NAS-Bench-201 network (CIFAR statistics; no weights are hosted)."""
    cfg = dict(url="", num_classes=num_classes, input_size=(3, input_size, input_size),
               pool_size=(max(1, input_size // 4), max(1, input_size // 4)), crop_pct=1.0, interpolation="bilinear",
               mean=CIFAR_MEAN, std=CIFAR_STD, first_conv="stem.0", classifier="classifier", license="mit")
    cfg.update(extra)
    return cfg


class Nb201Family:
    """nb201 genotypes as :class:`Nb201Net` (the :class:`backbones.factory.ModelFamily` of the NAS-Bench-201 space)."""

    genotype_type = Nb201Genotype
    registered_args = ("width", "cells", "num_classes")

    def hints_to_kwargs(self, genotype: Nb201Genotype, given: dict[str, Any]) -> dict[str, Any]:
        """Width, cells, classes and input size: explicit, then the genotype's hints, then :data:`NB201_DEFAULTS`."""
        if given.get("layout") is not None:
            raise ValueError(f"layout applies to cell (DARTS) genotypes only; {genotype.name or 'this genotype'} is "
                             "an nb201 genotype")
        hints = genotype.network
        return {key: next(v for v in (given.get(key), getattr(hints, key), NB201_DEFAULTS[key]) if v is not None)
                for key in ("width", "cells", "num_classes", "input_size")}

    def variant(self, genotype: Nb201Genotype, net: dict[str, Any]) -> str:
        return genotype.name or "nb201"

    def default_cfg(self, variant: str, genotype: Nb201Genotype, net: dict[str, Any],
                    given: dict[str, Any]) -> dict[str, Any]:
        return nb201_pretrained_cfg(net["num_classes"], net["input_size"], architecture=variant)

    def build(self, variant: str, genotype: Nb201Genotype, net: dict[str, Any], pretrained: bool,
              kwargs: dict[str, Any]) -> Nb201Net:
        feature_cfg = dict(out_indices=(0, 1, 2), feature_cls="getter")
        if kwargs.get("feature_cls") == "hook":
            feature_cfg["no_rewrite"] = True
        network = {k: net[k] for k in ("width", "cells", "num_classes")}
        return build_model_with_cfg(Nb201Net, variant, pretrained, genotype=genotype, feature_cfg=feature_cfg,
                                    **network, **kwargs)


NB201_FAMILY = register_family(Nb201Family())


def create_nb201_model(arch: Union[str, Nb201Genotype], pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The network of a benchmark string (``|op~0|+...|``) or nb201 genotype, through the one factory path.

    Takes timm's keyword arguments and ``width`` (C), ``cells`` (N per stage), ``num_classes``.
    """
    genotype = nb201_from_string(arch, "<arch>") if isinstance(arch, str) else arch
    return create_model_from_genotype(genotype, pretrained=pretrained, **kwargs)


default_cfgs = generate_default_cfgs({
    "nb201": nb201_pretrained_cfg(NB201_DEFAULTS["num_classes"], NB201_DEFAULTS["input_size"]),
    "nb201_resnet": nb201_pretrained_cfg(NB201_DEFAULTS["num_classes"], NB201_DEFAULTS["input_size"]),
})


@register_model
def nb201(pretrained: bool = False, arch: str = NB201_RESNET, **kwargs: Any) -> Nb201Net:
    """A NAS-Bench-201 network of ``arch`` (a benchmark string; default the residual cell), C=16, N=5."""
    return create_registered("nb201", nb201_from_string(arch, "<arch>"), pretrained, kwargs)


@register_model
def nb201_resnet(pretrained: bool = False, **kwargs: Any) -> Nb201Net:
    """NAS-Bench-201's residual cell x + conv3x3(conv3x3(x)) in the benchmark network (C=16, N=5, 10 classes)."""
    return create_registered("nb201_resnet", nb201_from_string(NB201_RESNET, "<arch>"), pretrained, kwargs)
