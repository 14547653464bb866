"""The supernet of the chain-structured MBConv space (paper Section 4.6.1).

Every searchable block of the base architecture becomes a :class:`MixedInvertedResidual`
holding all six (kernel, expansion) candidates of ``CHAIN_CHOICES``; its output is the
softmax-weighted sum of the candidates' outputs.

Weight sharing (what is shared and why):

* the 1x1 expansion conv exists once at the widest expansion (6); expansion 4 uses its
  first ``mid(4)`` output channels -- the narrower candidate is a prefix of the wider one;
* the depthwise kernel exists once at 7x7 over ``mid(6)`` channels; a kxk candidate uses
  the centred kxk window of its first ``mid(e)`` channels (same padding k//2 as timm);
* squeeze-excite and the 1x1 projection exist once at full width and are sliced the same way;
* batch norms are *not* shared: the statistics of a 3x3 and a 7x7 output differ, so each
  candidate keeps its own BN after the depthwise conv and after the projection, and each
  expansion keeps its own BN after the expansion conv (switchable BN, as in slimmable nets).

The network around the searchable blocks (stem, fixed first and last stages, head) is
the timm model built from the base genotype itself, so a derived child (see
``search.chain_child``) shares parameter names with it and inherits them key by key.

A base block written with repeats (``ir_r2_...``) is one *choice unit*: its physical
blocks have their own weights but share one row of architecture weights, exactly as one
choice index covers the whole arch string in a genotype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import make_divisible
from timm.models._efficientnet_builder import round_channels
from torch import nn

from backbones.chain_net import create_chain_model
from backbones.depthwise_conv import depthwise_conv2d, takes_faster_backward
from cdarts_deploy.genotype import (
    CHAIN_CHOICES,
    CHAIN_DEFAULTS,
    Block,
    ChainGenotype,
    ChainNetwork,
    is_searchable_block,
    parse_arch_string,
    resolve_base,
)

__all__ = ["ChoiceUnit", "MixedInvertedResidual", "ChainSupernet", "forward_levels"]

_MAX_KERNEL = max(k for k, _ in CHAIN_CHOICES)
_EXPANSIONS = sorted({e for _, e in CHAIN_CHOICES})


@dataclass(frozen=True)
class ChoiceUnit:
    """One searchable arch string: its place in the base and the physical blocks it expands to."""

    stage: int
    arch_index: int
    modules: tuple[int, ...]  # indices into the timm stage (nn.Sequential)
    block: Block


class MixedInvertedResidual(nn.Module):
    """An inverted-residual block holding all (kernel, expansion) candidates with sliced shared weights."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, se_ratio: float, act_layer: type[nn.Module] = nn.SiLU):
        super().__init__()
        self.in_chs, self.out_chs, self.stride, self.se_ratio = in_chs, out_chs, stride, se_ratio
        self.has_skip = in_chs == out_chs and stride == 1
        self.mids = {e: make_divisible(in_chs * e) for e in _EXPANSIONS}
        self.rds = {e: round_channels(self.mids[e] * se_ratio) for e in _EXPANSIONS} if se_ratio else {}
        mid = max(self.mids.values())
        self.conv_pw = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.bn1 = nn.ModuleDict({f"e{e}": nn.BatchNorm2d(self.mids[e]) for e in _EXPANSIONS})
        self.conv_dw = nn.Conv2d(mid, mid, _MAX_KERNEL, groups=mid, bias=False)  # weight only; applied sliced
        self.bn2 = nn.ModuleDict({self.key(i): nn.BatchNorm2d(self.mids[e]) for i, (_, e) in enumerate(CHAIN_CHOICES)})
        if se_ratio:
            rd = max(self.rds.values())
            self.se_reduce = nn.Conv2d(mid, rd, 1, bias=True)
            self.se_expand = nn.Conv2d(rd, mid, 1, bias=True)
        self.conv_pwl = nn.Conv2d(mid, out_chs, 1, bias=False)
        self.bn3 = nn.ModuleDict({self.key(i): nn.BatchNorm2d(out_chs) for i in range(len(CHAIN_CHOICES))})
        self.act = act_layer()

    @staticmethod
    def key(choice: int) -> str:
        k, e = CHAIN_CHOICES[choice]
        return f"k{k}_e{e}"

    def candidate_weights(self, choice: int) -> dict[str, torch.Tensor]:
        """The sliced shared weights of one candidate, under timm ``InvertedResidual`` parameter names."""
        k, e = CHAIN_CHOICES[choice]
        mid, off = self.mids[e], (_MAX_KERNEL - k) // 2
        key = self.key(choice)
        out = {
            "conv_pw.weight": self.conv_pw.weight[:mid],
            "conv_dw.weight": self.conv_dw.weight[:mid, :, off : off + k, off : off + k],
            "conv_pwl.weight": self.conv_pwl.weight[:, :mid],
        }
        if self.se_ratio:
            rd = self.rds[e]
            out["se.conv_reduce.weight"] = self.se_reduce.weight[:rd, :mid]
            out["se.conv_reduce.bias"] = self.se_reduce.bias[:rd]
            out["se.conv_expand.weight"] = self.se_expand.weight[:mid, :rd]
            out["se.conv_expand.bias"] = self.se_expand.bias[:mid]
        for name, bn in (("bn1", self.bn1[f"e{e}"]), ("bn2", self.bn2[key]), ("bn3", self.bn3[key])):
            for pname, t in bn.state_dict(keep_vars=True).items():
                out[f"{name}.{pname}"] = t
        return out

    def _candidate(self, expanded: torch.Tensor, choice: int) -> torch.Tensor:
        k, e = CHAIN_CHOICES[choice]
        w = self.candidate_weights(choice)
        mid = self.mids[e]
        if self.training and takes_faster_backward(k, self.stride, 1):
            x = depthwise_conv2d(expanded, w["conv_dw.weight"], (self.stride,) * 2, (k // 2,) * 2, (1, 1))
        else:
            x = F.conv2d(expanded, w["conv_dw.weight"], stride=self.stride, padding=k // 2, groups=mid)
        x = self.act(self.bn2[self.key(choice)](x))
        if self.se_ratio:
            s = x.mean((2, 3), keepdim=True)
            s = F.relu(F.conv2d(s, w["se.conv_reduce.weight"], w["se.conv_reduce.bias"]))
            s = F.conv2d(s, w["se.conv_expand.weight"], w["se.conv_expand.bias"])
            x = x * F.hardsigmoid(s)
        x = F.conv2d(x, w["conv_pwl.weight"])
        return self.bn3[self.key(choice)](x)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``weights``: one weight per candidate (a softmax row, or one-hot for a single path)."""
        full = self.conv_pw(x)  # computed once at the widest expansion; narrower ones are prefixes
        expanded = {e: self.act(self.bn1[f"e{e}"](full[:, : self.mids[e]])) for e in _EXPANSIONS}
        out = None
        for choice, (_, e) in enumerate(CHAIN_CHOICES):
            if not self.training and weights[choice] == 0:
                continue  # a one-hot path at inference skips the other candidates
            y = weights[choice] * self._candidate(expanded[e], choice)
            out = y if out is None else out + y
        if self.has_skip:
            out = out + x  # the weights sum to one, so one shortcut equals the weighted shortcuts
        return out


def forward_levels(net: nn.Module, x: torch.Tensor, taps: tuple[int, ...], mixed=None):
    """Run a timm MobileNetV3-style ``net`` returning (logits, [output of stage i for i in taps]).

    ``mixed(stage, index, block, x)`` handles blocks that need architecture weights (the supernet).
    """
    x = net.bn1(net.conv_stem(x))
    feats = []
    for i, stage in enumerate(net.blocks):
        for j, block in enumerate(stage):
            x = mixed(i, j, block, x) if isinstance(block, MixedInvertedResidual) else block(x)
        if i in taps:
            feats.append(x)
    return net.forward_head(x), feats


class ChainSupernet(nn.Module):
    """The base architecture with every searchable block replaced by a mixed block, plus alphas."""

    def __init__(
        self,
        base: str | list[list[str]] = "cdarts_b_base",
        num_classes: int = CHAIN_DEFAULTS["num_classes"],
        input_size: int = CHAIN_DEFAULTS["input_size"],
        stem_channels: int = 16,
        head_channels: int = 1280,
        alpha_init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        self.base = resolve_base(base)
        self.network = ChainNetwork(
            num_classes=num_classes, input_size=input_size, stem_channels=stem_channels, head_channels=head_channels
        )
        base_genotype = ChainGenotype.from_arch_strings(self.base, name="chain_supernet", network=self.network)
        self.net = create_chain_model(base_genotype, num_classes=num_classes)
        self.units = self._replace_searchable_blocks()
        if not self.units:
            raise ValueError("the base architecture has no searchable block (inner stages of more than one ir block)")
        self.alphas = nn.Parameter(alpha_init_std * torch.randn(len(self.units), len(CHAIN_CHOICES)))
        self.taps = self._level_taps()
        self.tap_channels = tuple(self.net.blocks[i][-1].conv_pwl.out_channels for i in self.taps)
        self._unit_of = {(u.stage, m): n for n, u in enumerate(self.units) for m in u.modules}

    def _replace_searchable_blocks(self) -> list[ChoiceUnit]:
        units = []
        n = len(self.base)
        for i, stage in enumerate(self.base):
            module = 0
            for j, arch in enumerate(stage):
                block = parse_arch_string(arch, f"base[{i}][{j}]")
                mods = tuple(range(module, module + block.repeats))
                module += block.repeats
                if not is_searchable_block(i, n, len(stage), block.type):
                    continue
                for m in mods:
                    old = self.net.blocks[i][m]
                    self.net.blocks[i][m] = MixedInvertedResidual(
                        old.conv_pw.in_channels, old.conv_pwl.out_channels, old.conv_dw.stride[0], block.se_ratio
                    )
                units.append(ChoiceUnit(stage=i, arch_index=j, modules=mods, block=block))
        return units

    def _level_taps(self) -> tuple[int, ...]:
        """Searchable stages whose output feeds a stride-2 stage, plus the last searchable stage."""
        stages = sorted({u.stage for u in self.units})
        taps = []
        for i in stages:
            strides_next = parse_arch_string(self.base[i + 1][0]).stride == 2
            if strides_next or i == stages[-1]:
                taps.append(i)
        return tuple(taps)

    # -- parameter groups -------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters()]

    # -- forward ------------------------------------------------------------------------------
    def choice_weights(self) -> torch.Tensor:
        return F.softmax(self.alphas, dim=-1)

    def forward_with_levels(self, x: torch.Tensor, weights: torch.Tensor | None = None):
        """(logits, stage features at ``self.taps``); ``weights`` overrides the softmax (e.g. one-hot)."""
        w = self.choice_weights() if weights is None else weights
        return forward_levels(self.net, x, self.taps, lambda i, j, block, h: block(h, w[self._unit_of[(i, j)]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_levels(x)[0]

    # -- discretization -----------------------------------------------------------------------
    def argmax_choices(self) -> list[int]:
        return self.alphas.detach().argmax(dim=-1).tolist()

    def choices_per_stage(self, unit_choices: list[int]) -> list[list[int]]:
        """Unit choices expanded to the base's shape (0 for fixed blocks), as ``apply_choices`` expects."""
        if len(unit_choices) != len(self.units):
            raise ValueError(f"got {len(unit_choices)} choices, expected one per searchable block ({len(self.units)})")
        out = [[0] * len(stage) for stage in self.base]
        for u, c in zip(self.units, unit_choices):
            out[u.stage][u.arch_index] = int(c)
        return out
