"""The search's collectives: gradient averaging, broadcasts and metric means over the ranks of a
:class:`~cdarts_deploy.data.distributed.DistContext`.

Gradients are averaged with one flattened all-reduce per optimizer step instead of
wrapping modules in DistributedDataParallel: the search alternates several
optimizers over overlapping parameter sets (a stem shared by two networks,
architecture weights used in every forward), which DDP's per-module hooks
cannot express without re-reducing or missing gradients.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.distributed as dist

from cdarts_deploy.data.distributed import DistContext


def average_gradients(params: Iterable[torch.nn.Parameter], ctx: DistContext) -> None:
    """Average the gradients of ``params`` over all ranks (one flattened all-reduce)."""
    if not ctx.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(ctx.world_size)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def broadcast_(tensors: Iterable[torch.Tensor], ctx: DistContext, src: int = 0) -> None:
    """Overwrite ``tensors`` on every rank with rank ``src``'s values (keeps derived genotypes identical)."""
    if not ctx.distributed:
        return
    for t in tensors:
        dist.broadcast(t.data, src)


def mean_over_ranks(values: Mapping[str, float], ctx: DistContext) -> dict[str, float]:
    """Average scalar metrics over ranks so rank 0 logs numbers for the whole data set."""
    if not ctx.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    t /= ctx.world_size
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True when ``flag`` is true on at least one rank (so all ranks fail together)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def rank_spread(tensors: Iterable[torch.Tensor], ctx: DistContext) -> float:
    """Largest difference of any entry between ranks (0.0 when gradient averaging kept them in step)."""
    if not ctx.distributed:
        return 0.0
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return float((hi - lo).max())
