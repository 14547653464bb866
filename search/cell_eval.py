"""The evaluation network of the cell search and its weight pool (paper Section 3.2, weight sharing).

The pool holds the weights (and SGD momentum) of every ``(cell, node, input,
operation)`` the deep evaluation network has ever used.  When the genotype
changes, a fresh :class:`backbones.darts_net.DartsNet` is built, its edge
operations are filled from the pool (both operations of every node) and the
genotype-independent parts (cell preprocessing, classifier, embedding heads)
carry over by name; before that, the outgoing network's weights are written back,
so an operation keeps what it learned while it was off the path.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from backbones.darts_net import DartsNet
from cdarts_deploy.genotype import CellGenotype

from .distill import EmbeddingHead


def edge_key(cell: int, node: int, src: int, op: str) -> str:
    return f"{cell}.{node}.{src}.{op}"


class EvalBranch(nn.Module):
    """A DartsNet plus one embedding head per stage tap; ``forward`` returns ``(logits, levels)``.

    ``levels`` are the head logits of every stage output followed by the final logits.
    """

    def __init__(self, net: DartsNet, heads: nn.ModuleList) -> None:
        super().__init__()
        self.net = net
        self.heads = heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        final, feats = self.net.forward_intermediates(x)
        feats = feats[-len(self.heads):]  # ImageNet layout also taps stem0; the heads follow the cell taps
        logits = self.net.forward_head(final)
        return logits, [h(f) for h, f in zip(self.heads, feats)] + [logits]


class EvalPool:
    """Builds evaluation networks for successive genotypes, inheriting weights through the pool.

    ``shared_stem``: modules of the search network (name -> module) used in place
    of the evaluation network's own stem; their values live in the search network,
    so the pool never stores them.
    """

    def __init__(
        self,
        layout: str,
        width: int,
        cells: int,
        num_classes: int,
        shared_stem: dict[str, nn.Module] | None = None,
        seed: int = 0,
    ) -> None:
        self.layout, self.width, self.cells, self.num_classes = layout, width, cells, num_classes
        self.shared_stem = shared_stem or {}
        self.seed = seed
        self.ops: dict[str, dict[str, torch.Tensor]] = {}
        self.op_momentum: dict[str, dict[str, torch.Tensor]] = {}
        self.rest: dict[str, torch.Tensor] = {}  # genotype-independent weights, by name in EvalBranch
        self.rest_momentum: dict[str, torch.Tensor] = {}
        self.branch: EvalBranch | None = None
        self.genotype: CellGenotype | None = None
        self.last_inherited = 0

    # ----- naming -------------------------------------------------------------------------------

    def _edge_ops(self, branch: EvalBranch) -> Iterator[tuple[str, str, nn.Module]]:
        """(pool key, module name prefix in the branch, op module) for every edge of the network."""
        for i, cell in enumerate(branch.net.cells):
            for k, (node, src, op) in enumerate(cell.edges):
                yield edge_key(i, node, src, op), f"net.cells.{i}.ops.{k}.", cell.ops[k]

    def _is_stem(self, name: str) -> bool:
        return any(name.startswith(f"net.{s}.") for s in self.shared_stem)

    # ----- building -----------------------------------------------------------------------------

    def build(self, genotype: CellGenotype, device: torch.device, build_id: int) -> EvalBranch:
        """A new evaluation branch for ``genotype`` with every weight the pool knows inherited.

        Call :meth:`write_back` for the outgoing branch first.  Weights the pool has
        never seen are drawn from a generator seeded by ``build_id`` (not from the
        training RNG stream), so a resumed run rebuilds exactly what an
        uninterrupted one built.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 100003 + build_id)
            net = DartsNet(genotype, layout=self.layout, width=self.width, cells=self.cells, num_classes=self.num_classes)
            heads = nn.ModuleList(EmbeddingHead(net.cells[i].out_channels, self.num_classes) for i in _cell_taps(net))
        for name, module in self.shared_stem.items():
            setattr(net, name, module)
        branch = EvalBranch(net, heads).to(device)
        own = {n: t for n, t in branch.state_dict().items() if not self._is_stem(n)}
        inherited = 0
        with torch.no_grad():
            for name, tensor in own.items():
                if name in self.rest:
                    tensor.copy_(self.rest[name])
            for key, _, module in self._edge_ops(branch):
                if key in self.ops:
                    module.load_state_dict(self.ops[key])
                    inherited += 1
        self.branch, self.genotype, self.last_inherited = branch, genotype, inherited
        return branch

    def make_optimizer(self, extra: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
        """SGD over the branch (shared stem included) and ``extra``, with the known momentum buffers restored."""
        assert self.branch is not None
        named = dict(self.branch.named_parameters())
        named.update({f"extra.{n}": p for n, p in extra.named_parameters()})
        opt = torch.optim.SGD(list(named.values()), lr=lr, momentum=momentum, weight_decay=weight_decay)
        op_names = {}
        for key, prefix, module in self._edge_ops(self.branch):
            for n, _ in module.named_parameters():
                op_names[prefix + n] = (key, n)
        for name, p in named.items():
            buf = None
            if name in op_names:
                key, n = op_names[name]
                buf = self.op_momentum.get(key, {}).get(n)
            else:
                buf = self.rest_momentum.get(name)
            if buf is not None:
                opt.state[p]["momentum_buffer"] = buf.clone().to(p.device)
        self._opt_names = {id(p): n for n, p in named.items()}
        return opt

    def write_back(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Copy the current branch's weights (and momentum, when given) into the pool."""
        branch = self.branch
        if branch is None:
            return
        momentum: dict[str, torch.Tensor] = {}
        if optimizer is not None:
            names = getattr(self, "_opt_names", {})
            for group in optimizer.param_groups:
                for p in group["params"]:
                    buf = optimizer.state.get(p, {}).get("momentum_buffer")
                    if buf is not None and id(p) in names:
                        momentum[names[id(p)]] = buf.detach().cpu().clone()
        op_prefixes = []
        for key, prefix, module in self._edge_ops(branch):
            self.ops[key] = {n: t.detach().cpu().clone() for n, t in module.state_dict().items()}
            op_momentum = {n[len(prefix):]: b for n, b in momentum.items() if n.startswith(prefix)}
            if op_momentum:
                self.op_momentum[key] = op_momentum
            op_prefixes.append(prefix)
        for name, tensor in branch.state_dict().items():
            if not self._is_stem(name) and not any(name.startswith(p) for p in op_prefixes):
                self.rest[name] = tensor.detach().cpu().clone()
        for name, buf in momentum.items():
            if not any(name.startswith(p) for p in op_prefixes):
                self.rest_momentum[name] = buf

    # ----- checkpoint -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "op_momentum": self.op_momentum,
            "rest": self.rest,
            "rest_momentum": self.rest_momentum,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ops = state["ops"]
        self.op_momentum = state["op_momentum"]
        self.rest = state["rest"]
        self.rest_momentum = state["rest_momentum"]
        self.branch = None
        self.genotype = None


def _cell_taps(net: DartsNet) -> list[int]:
    return [i for i in net.feature_cells if i >= 0]
