"""The NAS-Bench-201 space (paper Section 4.2) as a space of the search loop (:mod:`search.space`).

The search and evaluation networks share the benchmark's macro structure (C=16, N=5 by default);
discretisation keeps the arg-max operation of every edge, ``none`` included (the benchmark's rule),
and there is no skip-connect L1 term (Table 1).  With ``--benchmark DIR`` every epoch's derived
architecture is looked up in the benchmark (index, and its 200-epoch accuracies when DIR holds its
record), logged in ``log.jsonl`` and drawn against the epoch in ``benchmark.png``; the final cell is drawn in
``cell.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdarts_deploy.drawing.benchmark_curve import plot_benchmark_curve
from cdarts_deploy.drawing.nb201_cells import plot_nb201_cell
from cdarts_deploy.genotype import NB201_OPS, Nb201Genotype, Nb201Network
from cdarts_deploy.nats_bench import DATASETS, Accuracy, Benchmark, open_benchmark

from .config import SearchConfig
from .distill import EmbeddingHeads
from .errors import SearchInputError
from .nb201_eval import Nb201EvalPool
from .nb201_supernet import Nb201SearchNetwork, discretize
from .runlog import EpochLog
from .space import PooledSpace, alpha_entropy

BENCHMARK_PLOT = "benchmark.png"


class Nb201Space(PooledSpace):
    """Search network, shared embedding heads, arg-max discretisation, evaluation pool, benchmark look-up."""

    def __init__(self, cfg: SearchConfig, num_classes: int, input_size: int, device: torch.device) -> None:
        self.cfg, self.num_classes, self.input_size, self.device = cfg, num_classes, input_size, device
        self.search_net = Nb201SearchNetwork(num_classes, cfg.width, cfg.cells).to(device)
        if cfg.eval_width != cfg.width:  # one set of embedding heads for both networks: equal stage widths
            raise SearchInputError(f"--eval-width {cfg.eval_width}: the embedding heads are shared by both networks, "
                                   f"so the evaluation network needs the search width; set it to --width {cfg.width}")
        self.heads = EmbeddingHeads(self.search_net.tap_channels, num_classes, cfg.head_mid,
                                    cfg.head_embed).to(device)
        self.pool = Nb201EvalPool(cfg.eval_width, cfg.eval_cells, num_classes,
                                  shared_stem={"stem": self.search_net.stem} if cfg.share_stem else None,
                                  seed=cfg.seed, levels=len(self.heads))
        self.levels = len(self.heads)
        self.benchmark: Benchmark | None = open_benchmark(cfg.benchmark) if cfg.benchmark else None
        self._accuracies: dict[int, dict[str, Accuracy] | None] = {}

    # ----- parameters and forward ------------------------------------------------------------------------

    @property
    def search_module(self) -> nn.Module:
        return self.search_net

    def shared_with_eval(self) -> list[nn.Parameter]:
        return [p for m in self.pool.shared_stem.values() for p in m.parameters()]

    # ----- architecture ----------------------------------------------------------------------------------

    def derive(self, name: str = "searched") -> Nb201Genotype:
        g = Nb201Genotype(
            nodes=discretize(self.search_net.alpha),
            network=Nb201Network(num_classes=self.num_classes, input_size=self.input_size,
                                 width=self.cfg.export_width, cells=self.cfg.export_cells),
            name=name, description=f"{self.cfg.method} search on {self.cfg.dataset} (NAS-Bench-201 space)")
        if self.benchmark is not None:
            g = Nb201Genotype(nodes=g.nodes, network=g.network, name=g.name, description=g.description,
                              index=self.benchmark.index_of(g.arch_string()))
        return g

    def reg_loss(self) -> torch.Tensor | None:
        return None  # Table 1: no skip-connect L1 term in this space

    def arch_cost(self) -> torch.Tensor | None:
        return None

    def bn_modules(self) -> list[nn.Module]:
        return [self.search_net, self.heads]

    def stats(self, genotype: Nb201Genotype) -> dict[str, Any]:
        ops = [op for node in genotype.nodes for op in node]
        row: dict[str, Any] = {
            "arch": genotype.arch_string(),
            "none_edges": ops.count("none"),
            "skip_edges": ops.count("skip_connect"),
            "alpha_entropy": round(alpha_entropy(self.search_net.alpha), 5),
        }
        row.update(self.benchmark_row(genotype))
        return row

    def benchmark_row(self, genotype: Nb201Genotype) -> dict[str, Any]:
        """``bench_index`` and ``bench_<dataset>_valid/test`` of ``genotype`` (empty without a benchmark)."""
        if self.benchmark is None or genotype.index is None:
            return {}
        index = genotype.index
        if index not in self._accuracies:  # one record read per distinct architecture
            has = self.benchmark.has_record(index)
            self._accuracies[index] = self.benchmark.accuracies(index) if has else None
        row: dict[str, Any] = {"bench_index": index}
        accuracies = self._accuracies[index]
        if accuracies is not None:
            for dataset in DATASETS:
                for split in ("valid", "test"):
                    value = getattr(accuracies[dataset], split)
                    row[f"bench_{dataset}_{split}"] = None if value is None else round(value, 3)
        return row

    def arch_state(self) -> dict[str, list]:
        return {"alpha": self.search_net.alpha.detach().cpu().tolist(), "ops": list(NB201_OPS)}

    # ----- evaluation network ------------------------------------------------------------------------

    # ----- checkpoint and outputs ------------------------------------------------------------------------

    def finish(self, genotype: Nb201Genotype, out: Path, branch: nn.Module | None) -> None:
        plot_nb201_cell(genotype, out / "cell", formats=("png",))
        if self.benchmark is None:
            return

        rows = EpochLog(out / "log.jsonl").read()
        plot_benchmark_curve(rows, out / BENCHMARK_PLOT, DATASETS,
                             title=f"{self.cfg.method} in NAS-Bench-201 on {self.cfg.dataset}")
