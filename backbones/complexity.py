"""Model size: parameters and multiply-adds for one image (the counting convention of the papers).

* :func:`count_params` -- trainable and frozen parameters, auxiliary head excluded (as papers report).
* :func:`count_macs` -- multiply-adds of convolutions, linear layers and matrix products, taken from
  :class:`torch.utils.flop_counter.FlopCounterMode` (which counts 2 FLOPs per multiply-add) and halved.
* :func:`count_macs_inclusive` -- :func:`count_macs` plus one operation per output element of every
  BatchNorm, activation and pooling *module* (counted with forward hooks; functional calls such as
  ``F.relu`` and element-wise additions/concatenations are not counted).

All counts run the model once in eval mode (no auxiliary head, no drop path) under ``torch.no_grad`` on a
batch of one, then restore every submodule's training flag.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Iterator, Optional, Union

import timm
import torch
from timm.layers import activations, activations_me, adaptive_avgmax_pool
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import backbones  # noqa: F401  (registers the models)

__all__ = ["count_params", "count_macs", "count_macs_inclusive", "AUX_MODULE_NAMES", "ELEMENTWISE_TYPES"]

#: Submodule names whose parameters are training-only auxiliary heads (ours and the reference code's).
AUX_MODULE_NAMES = frozenset({"aux_head", "auxiliary_head"})

_ACTIVATIONS: tuple[type, ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
)
_POOLS: tuple[type, ...] = (
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)
_NORMS: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm,)


def _timm_elementwise_types() -> tuple[type, ...]:
    """timm's own activation and pooling modules (Swish, HardSigmoid, FastAdaptiveAvgPool, ...)."""
    types = []
    for module in (activations, activations_me):
        types += [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, nn.Module)]
    types += [
        v
        for name, v in vars(adaptive_avgmax_pool).items()
        if isinstance(v, type) and issubclass(v, nn.Module) and name != "SelectAdaptivePool2d"
    ]
    return tuple(types)


#: Module types whose every output element counts as one operation in :func:`count_macs_inclusive`.
ELEMENTWISE_TYPES: tuple[type, ...] = _ACTIVATIONS + _POOLS + _NORMS + _timm_elementwise_types()


def count_params(model: nn.Module) -> int:
    """Number of parameters, auxiliary heads (``aux_head`` / ``auxiliary_head`` submodules) excluded."""
    return sum(
        p.numel() for name, p in model.named_parameters() if not AUX_MODULE_NAMES.intersection(name.split("."))
    )


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _dummy_input(model: nn.Module, input_size: Optional[Union[tuple[int, int], int]], in_chans: int) -> torch.Tensor:
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        if "input_size" not in cfg:
            raise ValueError("input_size is required for a model without pretrained_cfg['input_size']")
        in_chans, *hw = cfg["input_size"]
        input_size = tuple(hw)
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return torch.randn(1, in_chans, *input_size, device=device, dtype=dtype)


def count_macs(
    model: nn.Module, input_size: Optional[Union[tuple[int, int], int]] = None, in_chans: int = 3
) -> int:
    """Multiply-adds of convolutions, linear layers and matrix products for one image.

    ``input_size`` is ``(H, W)`` or a side length; ``None`` takes it from ``model.pretrained_cfg``.
    """
    x = _dummy_input(model, input_size, in_chans)
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() // 2


def count_macs_inclusive(
    model: nn.Module, input_size: Optional[Union[tuple[int, int], int]] = None, in_chans: int = 3
) -> int:
    """:func:`count_macs` plus one operation per output element of BN, activation and pooling modules.

    Elements are counted with forward hooks on leaf modules of :data:`ELEMENTWISE_TYPES`, so functional
    calls (``F.relu``) and element-wise sums/concatenations are not included.
    """
    x = _dummy_input(model, input_size, in_chans)
    elements = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal elements
        if isinstance(output, torch.Tensor):
            elements += output.numel()

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, ELEMENTWISE_TYPES) and next(m.children(), None) is None
    ]
    counter = FlopCounterMode(display=False)
    try:
        with _eval_mode(model), torch.no_grad(), counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return counter.get_total_flops() // 2 + elements


def _main(argv: Optional[list[str]] = None) -> int:
    """Print parameters and multiply-adds of registered timm models: ``python -m backbones.complexity [NAME ...]``."""


    parser = argparse.ArgumentParser(prog="python -m backbones.complexity", description=_main.__doc__)
    parser.add_argument("names", nargs="*", help="timm model names (default: every CDARTS-deploy model)")
    args = parser.parse_args(argv)
    names = args.names or sorted(timm.list_models(module="darts_models") + timm.list_models(module="chain_net"))
    unknown = [n for n in names if not timm.is_model(n)]
    if unknown:
        print(f"error: unknown model {unknown[0]!r}; see timm.list_models('*darts*')", file=sys.stderr)
        return 2
    print(f"{'model':<20} {'input':>7} {'params':>12} {'MACs (conv+linear)':>20} {'MACs inclusive':>16}")
    for name in names:
        model = timm.create_model(name)
        size = model.pretrained_cfg["input_size"][-1]
        print(
            f"{name:<20} {size:>7} {count_params(model):>12,} {count_macs(model):>20,} "
            f"{count_macs_inclusive(model):>16,}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
