"""DARTS-space evaluation networks (implementation notes, section 1) as timm models.

Two layouts:

* ``cifar``: stem 3x3 conv (3 -> 3C) + BN, then ``cells`` cells; the cells at
  ``cells // 3`` and ``2 * cells // 3`` are reduction cells.
* ``imagenet``: two stride-2 stems (``stem0`` to 1/4, ``stem1`` to 1/8), then the
  cells with the same reduction positions; the first cell's input 0 comes from
  ``stem0`` and is therefore reduced.

Network stages: stage 0 runs up to and including the first reduction cell,
stage 1 up to and including the second, stage 2 is the rest (7/7/6 cells on
CIFAR-20, 5/5/4 on ImageNet-14).  Cell ``i`` uses ``genotype.stage(stage_of_cell(i))``.

Registered timm models (sizes from the zoo genotypes' network hints):
``cdarts_cifar``, ``cdarts_imagenet``, ``pcdarts_cifar``, ``pcdarts_imagenet``,
``darts_v1_cifar``, ``darts_v1_imagenet``, ``darts_v2_cifar``, ``darts_v2_imagenet``,
``pdarts_cifar``, ``pdarts_imagenet``.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._registry import is_model
from timm.models._features import feature_take_indices

from cdarts_deploy import genotype as gt
from cdarts_deploy.genotype import Cell, CellGenotype, GenotypeError

from .darts_ops import OPERATIONS, FactorizedReduce, Identity, ReLUConvBN, drop_path

__all__ = [
    "DartsCell",
    "DartsNet",
    "AuxiliaryHead",
    "reduction_positions",
    "stage_of_cell",
    "darts_pretrained_cfg",
    "create_darts_net",
    "LAYOUT_DEFAULTS",
    "CIFAR_MEAN",
    "CIFAR_STD",
]

CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)

#: Width, number of cells, classes and input size used when neither the caller nor the genotype says.
LAYOUT_DEFAULTS: dict[str, dict[str, int]] = {
    "cifar": dict(width=36, cells=20, num_classes=10, input_size=32),
    "imagenet": dict(width=48, cells=14, num_classes=1000, input_size=224),
}


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
        # Edge indices grouped by node, in node order (edges are listed node by node).
        self.node_edges: list[list[int]] = [
            [k for k, edge in enumerate(self.edges) if edge[0] == node] for node in range(2, self.num_nodes + 2)
        ]
        self.concat = tuple(cell.concat)
        self.out_channels = len(self.concat) * channels
        self.drop_prob = 0.0

    def _edge(self, k: int, states: list[torch.Tensor]) -> torch.Tensor:
        op = self.ops[k]
        h = op(states[self.edges[k][1]])
        if self.training and self.drop_prob > 0.0 and not isinstance(op, Identity):
            h = drop_path(h, self.drop_prob, True)
        return h

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for edge_ids in self.node_edges:
            node = self._edge(edge_ids[0], states)
            for k in edge_ids[1:]:
                node = node + self._edge(k, states)
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
        if min(x.shape[-2:]) >= 5:
            x = F.avg_pool2d(x, 5, stride=self.pool_stride, count_include_pad=False)
        else:
            x = F.adaptive_avg_pool2d(x, 2)
        if min(x.shape[-2:]) < 2:
            x = F.interpolate(x, size=(2, 2), mode="nearest")
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def _resolve_genotype(genotype: Union[CellGenotype, str, os.PathLike]) -> CellGenotype:
    if not isinstance(genotype, CellGenotype):
        genotype = gt.load(genotype)
    if not isinstance(genotype, CellGenotype):
        raise GenotypeError(f"found a {genotype.kind} genotype, expected a cell genotype", "kind", genotype.name or "")
    return genotype


class DartsNet(nn.Module):
    """A DARTS evaluation network (CIFAR or ImageNet layout) following timm's model conventions.

    ``forward`` returns logits; in training mode with ``auxiliary=True`` it returns ``(logits, aux_logits)``.
    Feature levels (``feature_info``): CIFAR -- the last cell before each reduction and the last cell
    (reductions 1, 2, 4); ImageNet -- ``stem0`` and the same three cells (reductions 4, 8, 16, 32).
    """

    def __init__(
        self,
        genotype: Union[CellGenotype, str, os.PathLike],
        layout: str = "cifar",
        width: int = 36,
        cells: int = 20,
        num_classes: int = 10,
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
        if cells < 3:
            raise ValueError(f"a DARTS network needs at least 3 cells (two are reduction cells), got {cells}")
        if width < 2 or width % 2:
            raise ValueError(f"width C must be a positive even number (FactorizedReduce halves it), got {width}")
        self.genotype = _resolve_genotype(genotype)
        self.genotype.stage(0, 3)  # fail early on a genotype with a stage count other than 1 or 3
        self.layout = layout
        self.width = width
        self.num_cells = cells
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.drop_path_rate = drop_path_rate
        self.grad_checkpointing = False

        c = width
        if layout == "cifar":
            c_stem = 3 * c
            self.stem = nn.Sequential(nn.Conv2d(in_chans, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
            c_prev_prev, c_prev, reduction_prev = c_stem, c_stem, False
            stem_info = dict(num_chs=c_stem, reduction=1, module="stem")
        else:
            self.stem0 = nn.Sequential(
                nn.Conv2d(in_chans, c // 2, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c // 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
            )
            self.stem1 = nn.Sequential(
                nn.ReLU(inplace=False),
                nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
            )
            c_prev_prev, c_prev, reduction_prev = c, c, True
            stem_info = dict(num_chs=c, reduction=4, module="stem0")

        reductions = reduction_positions(cells)
        c_cur = c
        stride = 1 if layout == "cifar" else 8
        cell_list = []
        cell_strides = []
        for i in range(cells):
            reduction = i in reductions
            if reduction:
                c_cur *= 2
                stride *= 2
            stage = self.genotype.stage(stage_of_cell(i, cells), 3)
            cell = DartsCell(stage.reduce if reduction else stage.normal, c_prev_prev, c_prev, c_cur, reduction, reduction_prev)
            cell_list.append(cell)
            cell_strides.append(stride)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.out_channels
        self.cells = nn.ModuleList(cell_list)

        # Feature taps: the last cell at each resolution (plus stem0 on ImageNet, the only 1/4 map).
        tap_cells = [r - 1 for r in reductions if r - 1 >= 0] + [cells - 1]
        tap_cells = sorted(set(tap_cells))
        self.feature_info: list[dict[str, Any]] = [stem_info] if layout == "imagenet" else []
        self.feature_cells: list[int] = [-1] if layout == "imagenet" else []
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

    def set_drop_path(self, rate: float) -> None:
        """Set the drop-path probability of every cell (the reference ramps it up over training)."""
        self.drop_path_rate = rate
        for cell in self.cells:
            cell.drop_prob = rate

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem", blocks=r"^cells\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.global_pool.train(self.training)
        self.classifier.train(self.training)

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.layout == "cifar":
            s = self.stem(x)
            return s, s
        s0 = self.stem0(x)
        return s0, self.stem1(s0)

    def _run_cell(self, cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return torch.utils.checkpoint.checkpoint(cell, s0, s1, use_reentrant=False)
        return cell(s0, s1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        s0, s1 = self._stem(x)
        for cell in self.cells:
            s0, s1 = s1, self._run_cell(cell, s0, s1)
        return s1

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
        wanted = {self.feature_cells[i]: i for i in take_indices}
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
        use_aux = self.training and self.aux_head is not None
        if not use_aux:
            return self.forward_head(self.forward_features(x))
        s0, s1 = self._stem(x)
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, self._run_cell(cell, s0, s1)
            if i == self.aux_index:
                aux_logits = self.aux_head(s1)
        return self.forward_head(s1), aux_logits


# ----- pretrained configs and registration -------------------------------------------------------


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


# Keys that name a weight source; pretrained=True without one would silently keep random weights.
_WEIGHT_SOURCE_KEYS = ("file", "url", "hf_hub_id", "state_dict")


def _check_weight_source(variant: str, pretrained: bool, kwargs: dict[str, Any]) -> None:
    if not pretrained:
        return
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    cfg = kwargs.get("pretrained_cfg")
    if any(overlay.get(k) for k in _WEIGHT_SOURCE_KEYS):
        return
    if isinstance(cfg, dict) and any(cfg.get(k) for k in _WEIGHT_SOURCE_KEYS):
        return
    raise ValueError(
        f"{variant}: no published weights are bundled; pass pretrained_cfg_overlay=dict(file=PATH) "
        "to load a local checkpoint, or pretrained=False"
    )


def create_darts_net(
    variant: str,
    genotype: Union[CellGenotype, str, os.PathLike],
    pretrained: bool = False,
    **kwargs: Any,
) -> DartsNet:
    """Build a :class:`DartsNet` through timm's ``build_model_with_cfg``.

    Features use timm's getter wrapper (``forward_intermediates``); pass ``feature_cls='hook'`` to use
    forward hooks on the ``feature_info`` modules instead.
    """
    _check_weight_source(variant, pretrained, kwargs)
    layout = kwargs.get("layout", "cifar")
    num_levels = 4 if layout == "imagenet" else 3  # see DartsNet.feature_info
    feature_cfg = dict(out_indices=tuple(range(num_levels)), feature_cls="getter")
    if kwargs.get("feature_cls") == "hook":
        feature_cfg["no_rewrite"] = True
    return build_model_with_cfg(
        DartsNet,
        variant,
        pretrained,
        genotype=genotype,
        feature_cfg=feature_cfg,
        **kwargs,
    )


def _zoo_registrations() -> dict[str, tuple[str, str]]:
    """timm model name -> (zoo genotype name, layout)."""
    names: dict[str, tuple[str, str]] = {}
    for zoo_name in ("cdarts_cifar", "cdarts_imagenet", "pcdarts_cifar", "pcdarts_imagenet"):
        names[zoo_name] = (zoo_name, zoo_name.rsplit("_", 1)[1])
    for zoo_name in ("darts_v1", "darts_v2", "pdarts"):
        for layout in gt.LAYOUTS:
            names[f"{zoo_name}_{layout}"] = (zoo_name, layout)
    return names


_REGISTRATIONS = _zoo_registrations()


def _network_args(zoo_name: str, layout: str) -> dict[str, int]:
    """Width, cells and classes of a registered model: the zoo hints when their layout matches, else defaults."""
    hints = gt.load(zoo_name).network
    defaults = LAYOUT_DEFAULTS[layout]
    if hints.layout == layout:
        return dict(
            width=hints.width or defaults["width"],
            cells=hints.cells or defaults["cells"],
            num_classes=hints.num_classes or defaults["num_classes"],
            input_size=hints.input_size or defaults["input_size"],
        )
    return dict(defaults)


def _registered_args(model_name: str) -> tuple[str, dict[str, Any]]:
    zoo_name, layout = _REGISTRATIONS[model_name]
    args = _network_args(zoo_name, layout)
    args.pop("input_size")
    return zoo_name, dict(layout=layout, **args)


def _default_cfg(model_name: str) -> dict[str, Any]:
    zoo_name, layout = _REGISTRATIONS[model_name]
    args = _network_args(zoo_name, layout)
    return darts_pretrained_cfg(layout, args["num_classes"], args["input_size"])


default_cfgs = generate_default_cfgs({name: _default_cfg(name) for name in _REGISTRATIONS})


def _make_entrypoint(model_name: str):
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> DartsNet:
        zoo_name, model_args = _registered_args(model_name)
        return create_darts_net(model_name, zoo_name, pretrained, **dict(model_args, **kwargs))

    entrypoint.__name__ = entrypoint.__qualname__ = model_name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"DARTS-space network {model_name!r}: zoo genotype {_REGISTRATIONS[model_name][0]!r}."
    return entrypoint


for _name in _REGISTRATIONS:
    _fn = _make_entrypoint(_name)
    # Re-importing this module (a reload in tests) must not trip timm's duplicate-name warning.
    globals()[_name] = _fn if is_model(_name) else register_model(_fn)
