"""What the sections of one run share: device, sizes, capabilities, the deadline, built networks, scratch folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import timm

from cdarts_deploy import genotype as gt
from cdarts_deploy.deploy import model_spec as ms

from .capabilities import Capability
from .settings import Net, Settings


class BudgetSpent(Exception):
    """The time budget ran out inside a section (it fails: it could have run)."""


class Context:
    """What sections share: device, sizes, capabilities, the deadline, built networks, scratch folder."""

    def __init__(self, device: str, settings: Settings, caps: Mapping[str, Capability], work: Path,
                 deadline: float | None = None) -> None:
        self.device, self.settings, self.caps, self.work = device, settings, dict(caps), work
        self.deadline = deadline if deadline is not None else time.monotonic() + settings.budget_s
        self._nets: dict[Net, Any] = {}
        self.onnx: dict[Net, dict] = {}

    def check_budget(self, progress: str) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetSpent(f"the time budget ran out inside the section ({progress})")

    def net(self, spec: Net) -> Any:
        """The CPU FP32 model with calibrated BatchNorm (built once; callers copy it before moving it)."""
        if spec not in self._nets:
            self._nets[spec] = build_net(spec)
        return self._nets[spec]


def build_net(spec: Net) -> Any:
    """A zoo or timm network in eval mode with calibrated BatchNorm (random weights otherwise give logits that
    hardly depend on the input, and every comparison would pass)."""
    if spec.timm:
        model = timm.create_model(spec.name, pretrained=False).eval()
    else:
        genotype = gt.load(spec.name)
        is_cell = isinstance(genotype, gt.CellGenotype)
        net_spec = ms.resolve_spec(genotype, width=spec.width if is_cell else None,
                                   cells=spec.cells if is_cell else None, num_classes=None,
                                   input_size=(spec.size, spec.size))
        model = ms.build_model(genotype, net_spec)
    ms.calibrate_batchnorm(model, (spec.size, spec.size))
    return model
