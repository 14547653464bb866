"""The w_E weight pool shared by successive evaluation networks (paper Section 3.2, weight sharing).

An evaluation network is made of *parts* that depend on the architecture (a cell
edge's operation, a chain block's candidate) and a *rest* that does not (cell
preprocessing, fixed stages, classifier, embedding heads).  The pool keeps the
weights and SGD momentum of every part any evaluation network has used, keyed by
part, and of the rest by parameter name.  When the architecture changes, the
outgoing network is written back, the new one is built and every part the pool
knows is copied in: an operation keeps what it learned while it was off the path,
and unchanged parts simply continue.

Spaces subclass :class:`WeightPool` and say how a network splits into parts
(:meth:`parts`) and how to start a part or rest tensor the pool has never seen.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn


class WeightPool:
    def __init__(self) -> None:
        self.ops: dict[str, dict[str, torch.Tensor]] = {}
        self.op_momentum: dict[str, dict[str, torch.Tensor]] = {}
        self.rest: dict[str, torch.Tensor] = {}
        self.rest_momentum: dict[str, torch.Tensor] = {}
        self.branch: nn.Module | None = None
        self.last_inherited = 0
        self._opt_names: dict[int, str] = {}

    # ----- space hooks -----------------------------------------------------------------------------

    def parts(self, branch: nn.Module) -> Iterator[tuple[str, str, nn.Module]]:
        """(pool key, parameter-name prefix in ``branch``, module) of every architecture-dependent part."""
        raise NotImplementedError

    def is_shared(self, name: str) -> bool:
        """Whether ``name`` lives in the search network (a shared stem): the pool never stores it."""
        return False

    def init_part(self, key: str, module: nn.Module) -> None:
        """Start a part the pool has never seen (default: keep the fresh initialisation)."""

    def init_rest(self, name: str, tensor: torch.Tensor) -> None:
        """Start a rest tensor the pool has never seen (default: keep the fresh initialisation)."""

    # ----- filling and emptying ------------------------------------------------------------------------

    def adopt(self, branch: nn.Module) -> nn.Module:
        """Fill ``branch`` from the pool and make it the live network (write back the outgoing one first)."""
        prefixes = []
        inherited = 0
        with torch.no_grad():
            for key, prefix, module in self.parts(branch):
                prefixes.append(prefix)
                if key in self.ops:
                    module.load_state_dict(self.ops[key])
                    inherited += 1
                else:
                    self.init_part(key, module)
            for name, tensor in branch.state_dict().items():
                if self.is_shared(name) or name.startswith(tuple(prefixes)):
                    continue
                if name in self.rest:
                    tensor.copy_(self.rest[name])
                else:
                    self.init_rest(name, tensor)
        self.branch, self.last_inherited = branch, inherited
        return branch

    def make_optimizer(self, extra: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
        """SGD over the live network and ``extra``, with the momentum buffers the pool knows restored."""
        assert self.branch is not None
        named = dict(self.branch.named_parameters())
        named.update({f"extra.{n}": p for n, p in extra.named_parameters()})
        opt = torch.optim.SGD(list(named.values()), lr=lr, momentum=momentum, weight_decay=weight_decay)
        part_names = {}
        for key, prefix, module in self.parts(self.branch):
            for n, _ in module.named_parameters():
                part_names[prefix + n] = (key, n)
        for name, p in named.items():
            if name in part_names:
                key, n = part_names[name]
                buf = self.op_momentum.get(key, {}).get(n)
            else:
                buf = self.rest_momentum.get(name)
            if buf is not None:
                opt.state[p]["momentum_buffer"] = buf.clone().to(p.device)
        self._opt_names = {id(p): n for n, p in named.items()}
        return opt

    def write_back(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Copy the live network's weights (and momentum, when given) into the pool."""
        branch = self.branch
        if branch is None:
            return
        momentum: dict[str, torch.Tensor] = {}
        if optimizer is not None:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    buf = optimizer.state.get(p, {}).get("momentum_buffer")
                    if buf is not None and id(p) in self._opt_names:
                        momentum[self._opt_names[id(p)]] = buf.detach().cpu().clone()
        prefixes = []
        for key, prefix, module in self.parts(branch):
            self.ops[key] = {n: t.detach().cpu().clone() for n, t in module.state_dict().items()}
            part_momentum = {n[len(prefix):]: b for n, b in momentum.items() if n.startswith(prefix)}
            if part_momentum:
                self.op_momentum[key] = part_momentum
            prefixes.append(prefix)
        prefixes_t = tuple(prefixes)
        for name, tensor in branch.state_dict().items():
            if not self.is_shared(name) and not name.startswith(prefixes_t):
                self.rest[name] = tensor.detach().cpu().clone()
        for name, buf in momentum.items():
            if not name.startswith(prefixes_t):
                self.rest_momentum[name] = buf

    # ----- checkpoint -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"ops": self.ops, "op_momentum": self.op_momentum, "rest": self.rest,
                "rest_momentum": self.rest_momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ops = state["ops"]
        self.op_momentum = state["op_momentum"]
        self.rest = state["rest"]
        self.rest_momentum = state["rest_momentum"]
        self.branch = None
