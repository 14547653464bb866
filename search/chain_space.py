"""The chain-structured MBConv space (paper Section 4.6.1) as a space of the search loop.

The search network is :class:`search.chain_supernet.ChainSupernet`; the evaluation
network is the arg-max child (fitted to ``--budget`` when given) built with timm.
Its w_E weights live in a pool keyed by (block, candidate), so successive
evaluation networks share weights exactly as in the cell space: a block whose
choice did not change keeps training from where it was.  A (block, candidate) the
pool has never held starts from the supernet's slice of that candidate, and the
fixed parts (stem, fixed stages, head) start from the supernet the first time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from backbones.chain_net import create_chain_model
from backbones.depthwise_conv import use_faster_depthwise_backward
from cdarts_deploy import latency_table_format as lt
from cdarts_deploy.drawing.figures import pyplot, save_figure
from cdarts_deploy.errors import UserError
from cdarts_deploy.genotype import CHAIN_CHOICES, ChainGenotype, base_from_option

from .chain_child import build_child, derive_genotype
from .chain_cost import CostModel, budget_band, budget_penalty
from .chain_supernet import ChainSupernet, MixedInvertedResidual, forward_levels
from .checkpoint import save_checkpoint
from .config import SearchConfig, latency_budget_ms
from .distill import EmbeddingHeads
from .errors import SearchInputError
from .eval_pool import WeightPool
from .space import PooledSpace, alpha_entropy

__all__ = ["ChainSpace", "ChainEvalPool", "ChainSupernet", "MixedInvertedResidual", "choices_of"]

def choices_of(supernet: ChainSupernet, genotype: ChainGenotype) -> list[int]:
    """The candidate index of every searchable block of ``genotype``."""
    out = []
    for u in supernet.units:
        b = genotype.stages[u.stage][u.arch_index]
        out.append(CHAIN_CHOICES.index((int(b.kernel), int(b.expansion))))
    return out


class ChainBranch(nn.Module):
    """A timm chain network; ``forward`` returns ``(logits, features of the tapped stages)``."""

    def __init__(self, net: nn.Module, taps: tuple[int, ...], choices: list[int]) -> None:
        super().__init__()
        self.net, self.taps, self.choices = net, taps, list(choices)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return forward_levels(self.net, x, self.taps)


class ChainEvalPool(WeightPool):
    """w_E of successive chain children; parts are ``(stage, block, candidate)``."""

    def __init__(self, supernet: ChainSupernet, seed: int) -> None:
        super().__init__()
        self.supernet, self.seed = supernet, seed
        self._source: dict[str, torch.Tensor] = {}

    def parts(self, branch: nn.Module) -> Iterator[tuple[str, str, nn.Module]]:
        for u, choice in zip(self.supernet.units, branch.choices):
            for m in u.modules:
                yield f"{u.stage}.{m}.{choice}", f"net.blocks.{u.stage}.{m}.", branch.net.blocks[u.stage][m]

    def init_part(self, key: str, module: nn.Module) -> None:
        stage, m, choice = (int(v) for v in key.split("."))
        mixed = self.supernet.net.blocks[stage][m]
        module.load_state_dict({k: t.detach() for k, t in mixed.candidate_weights(choice).items()})

    def init_rest(self, name: str, tensor: torch.Tensor) -> None:
        source = self._source.get(name[len("net."):]) if name.startswith("net.") else None
        if source is not None and source.shape == tensor.shape:
            tensor.copy_(source)

    def build(self, genotype: ChainGenotype, device: torch.device, build_id: int) -> ChainBranch:
        choices = choices_of(self.supernet, genotype)
        num_classes = self.supernet.network.num_classes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 100003 + build_id)
            net = create_chain_model(genotype, num_classes=num_classes)
            use_faster_depthwise_backward(net)  # trained here on CPU: the faster depthwise backward
        branch = ChainBranch(net, self.supernet.taps, choices).to(device)
        self._source = self.supernet.net.state_dict()
        try:
            return self.adopt(branch)
        finally:
            self._source = {}


def load_latency_table(cfg: SearchConfig) -> lt.LatencyTable | None:
    """The ``--latency-table`` of ``cfg`` (None without one), refused unless measured on ``--latency-runtime``."""
    if not cfg.latency_table:
        return None
    try:
        table = lt.load(cfg.latency_table).check(runtime=cfg.latency_runtime, space=cfg.space)
        if cfg.input_size:
            table.check(input_size=cfg.input_size)
    except lt.LatencyTableError as exc:
        raise SearchInputError(f"--latency-table {exc}") from None
    return table


class ChainSpace(PooledSpace):
    """Supernet, the shared embedding heads, cost models and the evaluation-network pool of the chain space.

    ``cost`` is the multiply-add model; ``latency`` the latency model of ``--latency-table`` (or None);
    ``budget_cost`` the one the budget applies to, with ``budget`` in its unit (0: no budget).
    """

    def __init__(self, cfg: SearchConfig, num_classes: int, input_size: int, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        try:
            base = base_from_option(cfg.base)
        except UserError as exc:
            raise SearchInputError(str(exc)) from None
        try:
            self.supernet = ChainSupernet(base, num_classes=num_classes,
                                          input_size=input_size, stem_channels=cfg.stem_channels,
                                          head_channels=cfg.head_channels,
                                          alpha_init_std=cfg.alpha_init_std).to(device)
        except ValueError as exc:
            raise SearchInputError(f"--base {cfg.base}: {exc}") from None
        # one set of heads for both networks: a child has the supernet's stage widths
        self.heads = EmbeddingHeads(self.supernet.tap_channels, num_classes, cfg.head_mid, cfg.head_embed).to(device)
        self.cost = CostModel(self.supernet, input_size)
        self.latency_table = load_latency_table(cfg)
        self.latency: CostModel | None = None
        if self.latency_table is not None:
            try:
                self.latency = CostModel(self.supernet, input_size, latency=self.latency_table)
            except lt.LatencyTableError as exc:
                raise SearchInputError(f"--latency-table {exc}") from None
        self.budget_cost, self.budget = (self.latency, latency_budget_ms(cfg)) if cfg.latency_budget \
            else (self.cost, cfg.budget)
        # a latency budget is a limit (the band below it), a multiply-add budget a target (+- the tolerance)
        self.budget_upper = bool(cfg.latency_budget)
        self.budget_target = budget_band(self.budget, cfg.budget_tolerance, self.budget_upper)[0]
        if self.budget:
            lo, _ = self.budget_cost.range()
            if self.budget < lo:
                flag = f"--latency-budget {cfg.latency_budget}" if cfg.latency_budget else f"--budget {cfg.budget:g}"
                unit = "ms on the latency table" if cfg.latency_budget else "multiply-adds"
                raise SearchInputError(f"{flag}: below the cheapest child of this space ({lo:.4g} {unit}); "
                                       "give at least that much")
        self.pool = ChainEvalPool(self.supernet, cfg.seed)
        self.levels = len(self.heads)

    @property
    def search_module(self) -> nn.Module:
        return self.supernet

    def shared_with_eval(self) -> list[nn.Parameter]:
        return []

    def search_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x)

    def student(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.supernet.forward_with_levels(x)

    def choices(self) -> list[int]:
        if self.budget:
            return self.budget_cost.fit_to_budget(self.supernet.alphas, self.budget, self.cfg.budget_tolerance,
                                                  upper=self.budget_upper)
        return self.supernet.argmax_choices()

    def derive(self) -> ChainGenotype:
        return derive_genotype(self.supernet, self.choices(), name="cdarts_chain_search")

    def reg_loss(self) -> torch.Tensor | None:
        return None  # the chain space has no parameter-free operation to regularize

    def arch_cost(self) -> torch.Tensor | None:
        if not self.budget:
            return None
        expected = self.budget_cost.expected_cost(self.supernet.choice_weights())
        return self.cfg.budget_weight * budget_penalty(expected, self.budget_target)

    def bn_modules(self) -> list[nn.Module]:
        return [self.supernet, self.heads]

    def stats(self, genotype: ChainGenotype) -> dict[str, Any]:
        choices = choices_of(self.supernet, genotype)
        with torch.no_grad():
            weights = self.supernet.choice_weights()
            expected = float(self.cost.expected_cost(weights))
            row = {"choices": choices, "child_madds": self.cost.child_cost(choices), "expected_madds": expected,
                   "budget_madds": self.cfg.budget or None}
            if self.latency is not None:
                row.update(child_latency_ms=round(self.latency.child_cost(choices), 5),
                           expected_latency_ms=round(float(self.latency.expected_cost(weights)), 5),
                           budget_latency_ms=latency_budget_ms(self.cfg) or None)
        row["alpha_entropy"] = round(alpha_entropy(self.supernet.alphas), 5)
        return row

    def finish(self, genotype: ChainGenotype, out: Path, branch: nn.Module | None) -> None:
        """``child.pth``: the final network's weights (trained w_E when the live evaluation network is this
        genotype, else inherited from the supernet), loadable into ``create_model_from_genotype``; ``choices.png``."""
        choices = choices_of(self.supernet, genotype)
        if branch is not None and list(branch.choices) == choices:
            state = branch.net.state_dict()
        else:
            state = build_child(self.supernet, choices)[1].state_dict()
        save_checkpoint({k: v.detach().cpu() for k, v in state.items()}, out / "child.pth")
        draw_choice_weights(self.supernet, choices, out / "choices.png")


def draw_choice_weights(supernet: ChainSupernet, choices: list[int], path: Path) -> None:
    """A heatmap of the softmax choice weights per searchable block, the derived choice boxed."""
    plt = pyplot()
    probs = supernet.choice_weights().detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(4 + 0.1 * len(choices), 1 + 0.3 * len(choices)))
    im = ax.imshow(probs, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(CHAIN_CHOICES)), [f"k{k} e{e}" for k, e in CHAIN_CHOICES])
    ax.set_yticks(range(len(choices)), [f"stage {u.stage} block {u.arch_index}" for u in supernet.units])
    for row, c in enumerate(choices):
        ax.add_patch(plt.Rectangle((c - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(im, ax=ax, label="choice weight")
    ax.set_title("chain search: choice weights (red: derived network)")
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
