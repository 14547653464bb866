"""DARTS-space evaluation networks (the retrain networks of DARTS and CDARTS) in timm's model conventions.

Two layouts (stems: :mod:`backbones.darts_stem`):

* ``cifar``: stem 3x3 conv (3 -> 3C) + BN, then ``cells`` cells; the cells at
  ``cells // 3`` and ``2 * cells // 3`` are reduction cells.
* ``imagenet``: two stride-2 stems (``stem0`` to 1/4, ``stem1`` to 1/8), then the
  cells with the same reduction positions; the first cell's input 0 comes from
  ``stem0`` and is therefore reduced.

Network stages: stage 0 runs up to and including the first reduction cell,
stage 1 up to and including the second, stage 2 is the rest (7/7/6 cells on
CIFAR-20, 5/5/4 on ImageNet-14).  Cell ``i`` uses ``genotype.stage(stage_of_cell(i))``.

The forward passes are free of branches on tensor shapes and of modules picked by a
runtime index, so the networks script (``torch.jit.script``), trace symbolically
(``torch.fx``) and export to ONNX with dynamic height and width.  The registered timm
models (``cdarts_cifar``, ``darts_v2_imagenet``, ...) live in :mod:`backbones.darts_models`.
"""

# No ``from __future__ import annotations``: torch.fx copies forward() annotations into generated
# code that TorchScript compiles, and it cannot resolve them as strings.

import os
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import create_classifier
from timm.models._features import feature_take_indices
from torch import nn

from cdarts_deploy import genotype as gt
from cdarts_deploy.genotype import LAYOUT_DEFAULTS, Cell, CellGenotype, GenotypeError

from .classifier_api import TimmClassifierApi
from .darts_ops import OPERATIONS, FactorizedReduce, Identity, ReLUConvBN, drop_path
from .darts_stem import build_darts_stem

__all__ = [
    "DartsCell",
    "DartsNet",
    "AuxiliaryHead",
    "reduction_positions",
    "stage_of_cell",
    "resolve_genotype",
]


def reduction_positions(num_cells: int) -> tuple[int, int]:
    """Indices of the two reduction cells."""
    return num_cells // 3, 2 * num_cells // 3


def stage_of_cell(index: int, num_cells: int) -> int:
    """The genotype stage (0, 1, 2) that cell ``index`` takes its cells from.

    A reduction cell is the last cell of its stage.
    """
    r1, r2 = reduction_positions(num_cells)
    return 0 if index <= r1 else 1 if index <= r2 else 2


class DartsCell(nn.Module):
    """One discrete DARTS cell.

    Layout (stable; the search code copies op weights in and out by it):

    * ``preprocess0`` / ``preprocess1``: the two input adapters (FactorizedReduce or ReLUConvBN for input 0,
      ReLUConvBN for input 1), both producing ``C`` channels.
    * ``ops[k]``: the operation of edge ``k``; ``edges[k] = (node, input_index, op_name)`` where ``node`` counts
      the two cell inputs as 0 and 1 (so intermediate nodes are 2..), and edges are listed node by node in
      genotype order.  ``ops[k]`` is exactly ``darts_ops.OPERATIONS[op_name](C, stride, True)`` with stride 2
      for edges reading a cell input of a reduction cell, so its ``state_dict`` matches any other instance.
    * ``concat``: node indices concatenated into the output (``out_channels = len(concat) * C``).
    * ``drop_prob``: drop-path probability, applied in training to every op except the identity.
    """

    def __init__(
        self,
        cell: Cell,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.channels = channels
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)

        self.edges: list[tuple[int, int, str]] = []
        ops = []
        for node_offset, node_edges in enumerate(cell.nodes):
            for op_name, src in node_edges:
                stride = 2 if reduction and src < 2 else 1
                ops.append(OPERATIONS[op_name](channels, stride, True))
                self.edges.append((node_offset + 2, src, op_name))
        self.ops = nn.ModuleList(ops)
        self.num_nodes = len(cell.nodes)
        # The forward plan, one entry per edge aligned with ``ops`` and iterated together with it
        # (never indexing ``ops`` by a runtime value): input state, whether the edge opens or closes
        # its node's sum, and whether drop path applies (never to the identity).
        # Tuples, not lists: TorchScript zips a ModuleList only with values of static length.
        nodes = [node for node, _, _ in self.edges]
        self.edge_sources: tuple[int, ...] = tuple(src for _, src, _ in self.edges)
        self.edge_opens: tuple[bool, ...] = tuple(k == 0 or nodes[k - 1] != n for k, n in enumerate(nodes))
        self.edge_closes: tuple[bool, ...] = tuple(
            k == len(nodes) - 1 or nodes[k + 1] != n for k, n in enumerate(nodes))
        self.edge_droppable: tuple[bool, ...] = tuple(not isinstance(op, Identity) for op in ops)
        self.concat: list[int] = list(cell.concat)
        self.out_channels = len(self.concat) * channels
        self.drop_prob = 0.0

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        node = states[1]  # overwritten by the first edge of every node
        for op, src, opens, closes, droppable in zip(
            self.ops, self.edge_sources, self.edge_opens, self.edge_closes, self.edge_droppable
        ):
            h = op(states[src])
            if droppable and self.training and self.drop_prob > 0.0:
                h = drop_path(h, self.drop_prob, True)
            node = h if opens else node + h
            if closes:
                states.append(node)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """Training-only classifier on the second stage's output (DARTS style; never counted in sizes).

    The average pool is the reference one (5x5, stride 3 on CIFAR's 8x8 map, stride 2 on ImageNet's 7x7);
    maps too small for it are pooled adaptively so that small test inputs work too.
    """

    def __init__(self, in_channels: int, num_classes: int, layout: str) -> None:
        super().__init__()
        self.pool_stride = 3 if layout == "cifar" else 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if min(x.shape[-2], x.shape[-1]) >= 5:
            x = F.avg_pool2d(x, 5, stride=self.pool_stride, count_include_pad=False)
        else:
            x = F.adaptive_avg_pool2d(x, 2)
        if min(x.shape[-2], x.shape[-1]) < 2:
            x = F.interpolate(x, size=(2, 2), mode="nearest")
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def resolve_genotype(genotype: Union[CellGenotype, str, os.PathLike]) -> CellGenotype:
    """``genotype`` itself, or the cell genotype loaded from a path or zoo name."""
    if not isinstance(genotype, CellGenotype):
        genotype = gt.load(genotype)
    if not isinstance(genotype, CellGenotype):
        raise GenotypeError(f"found a {genotype.kind} genotype, expected a cell genotype", "kind", genotype.name or "")
    return genotype


class DartsNet(TimmClassifierApi, nn.Module):
    """A DARTS evaluation network (CIFAR or ImageNet layout) following timm's model conventions.

    ``forward`` returns logits; in training mode with ``auxiliary=True`` it returns ``(logits, aux_logits)``.
    Feature levels (``feature_info``): CIFAR -- the last cell before each reduction and the last cell
    (reductions 1, 2, 4); ImageNet -- ``stem0`` and the same three cells (reductions 4, 8, 16, 32).
    ``width``, ``cells`` and ``num_classes`` left at ``None`` take the layout's defaults
    (:data:`cdarts_deploy.genotype.LAYOUT_DEFAULTS`).
    """

    def __init__(
        self,
        genotype: Union[CellGenotype, str, os.PathLike],
        layout: str = "cifar",
        width: Optional[int] = None,
        cells: Optional[int] = None,
        num_classes: Optional[int] = None,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        auxiliary: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if layout not in gt.LAYOUTS:
            raise ValueError(f"layout {layout!r} is not one of {', '.join(gt.LAYOUTS)}")
        defaults = LAYOUT_DEFAULTS[layout]
        width = defaults["width"] if width is None else width
        cells = defaults["cells"] if cells is None else cells
        num_classes = defaults["num_classes"] if num_classes is None else num_classes
        if cells < 3:
            raise ValueError(f"a DARTS network needs at least 3 cells (two are reduction cells), got {cells}")
        if width < 2 or width % 2:
            raise ValueError(f"width C must be a positive even number (FactorizedReduce halves it), got {width}")
        self.genotype = resolve_genotype(genotype)
        self.genotype.stage(0, 3)  # fail early on a genotype with a stage count other than 1 or 3
        self.layout = layout
        self.width = width
        self.num_cells = cells
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.drop_path_rate = drop_path_rate
        self.grad_checkpointing = False

        stem = build_darts_stem(layout, width, in_chans)
        self.stem, self.stem0, self.stem1 = stem.stem, stem.stem0, stem.stem1
        c_prev_prev, c_prev, reduction_prev = stem.c_prev_prev, stem.c_prev, stem.reduction_prev

        reductions = reduction_positions(cells)
        c_cur = width
        stride = 1 if layout == "cifar" else 8
        cell_list = []
        cell_strides = []
        for i in range(cells):
            reduction = i in reductions
            if reduction:
                c_cur *= 2
                stride *= 2
            stage = self.genotype.stage(stage_of_cell(i, cells), 3)
            cell = DartsCell(stage.reduce if reduction else stage.normal, c_prev_prev, c_prev, c_cur, reduction,
                             reduction_prev)
            cell_list.append(cell)
            cell_strides.append(stride)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.out_channels
        self.cells = nn.ModuleList(cell_list)

        # Feature taps: the last cell at each resolution (plus stem0 on ImageNet, the only 1/4 map).
        tap_cells = sorted(set([r - 1 for r in reductions if r - 1 >= 0] + [cells - 1]))
        self.feature_info = [stem.feature_info] if stem.feature_info else []
        self.feature_cells = [-1] if stem.feature_info else []
        for i in tap_cells:
            self.feature_info.append(
                dict(num_chs=self.cells[i].out_channels, reduction=cell_strides[i], module=f"cells.{i}")
            )
            self.feature_cells.append(i)

        self.aux_index = reductions[1]
        self.auxiliary = auxiliary
        self.aux_head = (
            AuxiliaryHead(self.cells[self.aux_index].out_channels, num_classes, layout) if auxiliary else None
        )

        self.num_features = self.head_hidden_size = c_prev
        self.global_pool, self.head_drop, self.classifier = create_classifier(
            self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate
        )
        self.set_drop_path(drop_path_rate)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    # ----- timm model interface -------------------------------------------------------------

    @torch.jit.ignore
    def set_drop_path(self, rate: float) -> None:
        """Set the drop-path probability of every cell (the reference ramps it up over training)."""
        self.drop_path_rate = rate
        for cell in self.cells:
            cell.drop_prob = rate

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Every layout fills all three slots (unused ones are identities): one straight line.
        s0 = self.stem0(self.stem(x))
        return s0, self.stem1(s0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        s0, s1 = self._stem(x)
        for cell in self.cells:
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                s0, s1 = s1, torch.utils.checkpoint.checkpoint(cell, s0, s1, use_reentrant=False)
            else:
                s0, s1 = s1, cell(s0, s1)
        return s1

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
        wanted = {self.feature_cells[i] for i in take_indices}
        intermediates: list[torch.Tensor] = []
        s0, s1 = self._stem(x)
        if -1 in wanted:
            intermediates.append(s0)
        last_cell = self.feature_cells[max_index] if stop_early or intermediates_only else len(self.cells) - 1
        for i, cell in enumerate(self.cells):
            if i > last_cell:
                break
            s0, s1 = s1, self._run_cell(cell, s0, s1)
            if i in wanted:
                intermediates.append(s1)
        if intermediates_only:
            return intermediates
        return s1, intermediates

    @torch.jit.ignore
    def _run_cell(self, cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training:
            return torch.utils.checkpoint.checkpoint(cell, s0, s1, use_reentrant=False)
        return cell(s0, s1)

    @torch.jit.ignore
    def prune_intermediate_layers(
        self,
        indices: Union[int, list[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the cells after the last wanted feature level (and the head)."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        keep = max(self.feature_cells[max_index] + 1, 0)
        if keep < len(self.cells):
            self.cells = self.cells[:keep]
            if self.aux_head is not None and self.aux_index >= keep:
                self.aux_head, self.auxiliary = None, False
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            prune_head = True
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        aux_head = self.aux_head
        if aux_head is not None and self.training:
            s0, s1 = self._stem(x)
            aux_logits = torch.zeros(0)  # set at cell aux_index (always reached: it is a reduction cell)
            for i, cell in enumerate(self.cells):
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    s0, s1 = s1, torch.utils.checkpoint.checkpoint(cell, s0, s1, use_reentrant=False)
                else:
                    s0, s1 = s1, cell(s0, s1)
                if i == self.aux_index:
                    aux_logits = aux_head(s1)
            return self.forward_head(s1), aux_logits
        return self.forward_head(self.forward_features(x))
