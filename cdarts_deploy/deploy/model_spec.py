"""The concrete network a genotype is exported as: size resolution, construction, weights, BN calibration."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from backbones.checkpoint_io import load_file_into
from backbones.factory import create_model_from_genotype, resolve_network
from cdarts_deploy.errors import UserError
from cdarts_deploy.genotype import CellGenotype, Genotype, Nb201Genotype

#: What a checkpoint that does not fit usually means for a cell network.
CHECKPOINT_HINT = "check --layout/--width/--cells/--num-classes against the run that saved it"


class ExportError(UserError):
    """A problem with the requested export the user can fix (options that do not apply, unknown exporter)."""


@dataclass(frozen=True)
class NetworkSpec:
    """The concrete network a genotype is exported as, after hints and overrides."""

    layout: str | None
    width: int | None
    cells: int | None
    num_classes: int
    input_size: tuple[int, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "width": self.width,
            "cells": self.cells,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
        }


def resolve_spec(
    genotype: Genotype,
    layout: str | None = None,
    width: int | None = None,
    cells: int | None = None,
    num_classes: int | None = None,
    input_size: tuple[int, int] | None = None,
) -> NetworkSpec:
    """Combine command-line overrides, genotype hints and layout defaults (in that order)."""
    if isinstance(genotype, CellGenotype):
        net = resolve_network(genotype, layout=layout, width=width, cells=cells, num_classes=num_classes)
        size = input_size or (net["input_size"], net["input_size"])
        return NetworkSpec(net["layout"], net["width"], net["cells"], net["num_classes"], tuple(size))
    if isinstance(genotype, Nb201Genotype):  # width C and cells per stage N, no layout
        if layout:
            raise ExportError("--layout applies to cell (DARTS) genotypes only; drop it for an nb201 genotype")
        net = resolve_network(genotype, width=width, cells=cells, num_classes=num_classes)
        side = net["input_size"]
        return NetworkSpec(None, net["width"], net["cells"], net["num_classes"], tuple(input_size or (side, side)))
    if layout or width or cells:
        raise ExportError("--layout, --width and --cells apply to cell genotypes only; drop them for a chain genotype")
    net = resolve_network(genotype, num_classes=num_classes or None)
    side = net["input_size"]
    return NetworkSpec(None, None, None, net["num_classes"], tuple(input_size or (side, side)))


def build_model(genotype: Genotype, spec: NetworkSpec, **kwargs: Any) -> torch.nn.Module:
    """The timm-style model for ``genotype`` at ``spec``, in eval mode."""
    if isinstance(genotype, CellGenotype):
        model = create_model_from_genotype(
            genotype, layout=spec.layout, width=spec.width, cells=spec.cells, num_classes=spec.num_classes, **kwargs
        )
    elif isinstance(genotype, Nb201Genotype):
        model = create_model_from_genotype(genotype, width=spec.width, cells=spec.cells, num_classes=spec.num_classes,
                                           **kwargs)
    else:
        model = create_model_from_genotype(genotype, num_classes=spec.num_classes, **kwargs)
    return model.eval()


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a state_dict (bare, or nested as timm/mmengine/plain dicts store it) saved from the same model.

    Read with ``weights_only=True``; every refusal is one line (:class:`backbones.checkpoint_io.CheckpointError`).
    """
    load_file_into(model, path, hint=CHECKPOINT_HINT)


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, input_size: tuple[int, int], batches: int = 2, batch: int = 4) -> None:
    """Give a randomly initialised network real BatchNorm statistics.

    A deep random network in eval mode (running mean 0, variance 1) shrinks its activations layer by
    layer until the logits no longer depend on the input; a parity check on such a model proves
    nothing.  Averaging BN statistics over a few random batches keeps activations at unit scale.
    Two batches of four are plenty: every channel's statistics average over batch x H x W values, thousands
    even in the last cells.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    generator = torch.Generator().manual_seed(0)
    try:
        for _ in range(batches):
            model(torch.randn(batch, 3, *input_size, generator=generator))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()


def random_batch(batch: int, input_size: tuple[int, int], seed: int = 0, in_chans: int = 3) -> np.ndarray:
    """A reproducible standard-normal NCHW float32 batch."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, in_chans, *input_size)).astype(np.float32)
