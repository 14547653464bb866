"""The networks, batches, iteration counts and time budget of each section, per device and mode."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Net:
    """One network of a section: a zoo genotype (width/cells for cell networks) or a timm model."""

    name: str
    size: int
    width: int | None = None
    cells: int | None = None
    timm: bool = False

    def label(self) -> str:
        shape = f"{self.name}@{self.size}"
        return shape + (f" (C={self.width}, {self.cells} cells)" if self.width else "")


@dataclass
class Settings:
    parity_nets: list[Net]
    parity_batches: tuple[int, ...]
    latency_nets: list[Net]
    latency_batches: tuple[int, ...]
    compile_nets: list[str]
    compile_batches: tuple[int, ...]
    warmup: int
    iters: int
    dtype: str
    search: dict
    train: dict
    gemm_sizes: tuple[int, ...]
    budget_s: float
    trt_nets: list[Net] = field(default_factory=list)


# A random 20-cell DARTS network is chaotic: FP16 rounding alone moves its logits by more than their scale
# (docs/results/reduced_precision_logit_error.md), so no reduced-precision rule can pass or fail meaningfully on
# it; parity uses the 8-cell search-size network.
PARITY_CELL = Net("cdarts_cifar", 32, width=16, cells=8)
PARITY_CHAIN = Net("cdarts_b", 224)
ZOO_LATENCY = [Net("cdarts_cifar", 32), Net("cdarts_b", 224), Net("cdarts_imagenet", 224)]
TIMM_PEERS = [Net("efficientnet_b0", 224, timm=True), Net("mobilenetv3_large_100", 224, timm=True),
              Net("resnet50", 224, timm=True)]


def settings_for(device: str, quick: bool, dtype: str = "fp32") -> Settings:
    """Sizes and budget: paper sizes on a GPU (fewer iterations with ``quick``), toy sizes on the CPU."""
    if device == "cpu":  # a check of the check: every section's code path, at sizes two shared cores manage
        tiny = Net("cdarts_cifar", 32, width=8, cells=5)
        return Settings([tiny], (1, 2), [tiny], (1, 2), ["cdarts_cifar"], (1, 2), 1, 3, dtype,
                        search=dict(width=4, cells=3, eval_cells=3, batch=4, input_size=16, steps=2, warmup=1,
                                    threads=1),
                        train=dict(genotype="cdarts_cifar", width=4, cells=3, size=16, batch=4, steps=2, rounds=1,
                                   aux_weight=0.4, threads=1, channels_last=False, amp="off"),
                        gemm_sizes=(256,), budget_s=900, trt_nets=[tiny])
    # paper sizes: search network C=16, 8 cells, evaluation network 20 cells, batch 64 (Table 1);
    # retraining C=36, 20 cells, batch 96, channels-last, BF16 autocast
    search = dict(width=16, cells=8, eval_cells=20, batch=64, input_size=32, steps=3 if quick else 5,
                  warmup=1 if quick else 2, threads=0)
    train = dict(genotype="cdarts_cifar", width=36, cells=20, size=32, batch=96, steps=4 if quick else 8,
                 rounds=1 if quick else 3, aux_weight=0.4, threads=None, channels_last=True, amp="bf16")
    return Settings(
        parity_nets=[PARITY_CELL, PARITY_CHAIN], parity_batches=(1, 8),
        latency_nets=ZOO_LATENCY + TIMM_PEERS, latency_batches=(1, 8, 32),
        # a compiled model costs two compilations at batches 1, 8, 32 (batch 1, then one dynamic-batch graph
        # for 8 and 32), one at a single batch
        compile_nets=["cdarts_b"] if quick else ["cdarts_cifar", "cdarts_b", "resnet50"],
        compile_batches=(32,) if quick else (1, 8, 32),
        warmup=5 if quick else 10, iters=30 if quick else 100, dtype=dtype, search=search, train=train,
        gemm_sizes=(4096,) if quick else (4096, 8192), budget_s=150 if quick else 420,
        trt_nets=[PARITY_CELL, PARITY_CHAIN])  # the 8-cell network: see PARITY_CELL
