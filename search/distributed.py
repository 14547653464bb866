"""Data-parallel plumbing: torchrun environment, gradient averaging, rank-0-only writes.

Gradients are averaged with one flattened all-reduce per optimizer step instead of
wrapping modules in DistributedDataParallel: the search alternates several
optimizers over overlapping parameter sets (a stem shared by two networks,
architecture weights used in every forward), which DDP's per-module hooks
cannot express without re-reducing or missing gradients.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU); a single process otherwise."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


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


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def rank_spread(tensors: Iterable[torch.Tensor], ctx: DistContext) -> float:
    """Largest difference of any entry between ranks (0.0 when gradient averaging kept them in step)."""
    if not ctx.distributed:
        return 0.0
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return float((hi - lo).max())
