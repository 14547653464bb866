"""CDARTS search in the chain-structured MBConv space (paper Section 4.6.1).

One search step after the w_S warm-up (Algorithm 1 applied to the chain supernet):

1. every ``rebuild_every`` steps: derive the best child (arg-max per block, fitted to the
   budget if one is given); if it changed, build it with timm and inherit the supernet's
   chosen candidate weights, then train it (w_E) on ``eval_train_steps`` val batches with CE;
2. on a *val* batch: CE(supernet) + CE(child) + lambda * multi-level distillation
   (+ budget_weight * expected-cost penalty); one update of the architecture weights (Adam)
   and one of the child with both networks' embedding heads (SGD) -- jointly, Eq. (8);
3. on a *train* batch: CE of the supernet; one update of w_S (SGD, clipped at 5).

Weights use SGD (momentum 0.9, wd 4e-5, lr 0.5 annealed linearly to 0 per step).
Files in ``--out``: genotype.json and checkpoint.pt (after every epoch), log.jsonl (one row per
epoch), child.pth (the final child's inherited weights, a timm state_dict), choices.png.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from timm.utils import distribute_bn
from torch import nn
from tqdm import tqdm

from backbones.chain_net import create_chain_model
from cdarts_deploy.genotype import CHAIN_DEFAULTS, ChainGenotype, save

from .chain_child import build_child, derive_genotype
from .chain_cost import CostModel, budget_penalty
from .chain_space import ChainSupernet, forward_levels
from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .distill import DISTILL_KINDS, EmbeddingHead, MultiLevelDistillation
from .distributed import DistContext, average_gradients, broadcast_, mean_over_ranks, rank_spread
from .errors import SearchInputError
from .runlog import EpochLog

__all__ = ["ChainSearchConfig", "PRESETS", "TINY_BASE", "ChainSearch", "check_config", "run_search"]

CHECKPOINT_FORMAT = "cdarts-chain-search-v1"

#: Options that may change between a run and its resume: they do not affect what is computed.
RESUME_MAY_DIFFER = ("workers",)

#: A 4-stage base small enough for CPU tests: 4 searchable blocks in 2 stages.
TINY_BASE: list[list[str]] = [
    ["ds_r1_k3_s1_e1_c8_se0.25"],
    ["ir_r1_k3_s2_e4_c16_se0.25", "ir_r1_k3_s1_e4_c16_se0.25"],
    ["ir_r1_k3_s2_e4_c24_se0.25", "ir_r1_k3_s1_e4_c24_se0.25"],
    ["cn_r1_k1_s1_c64"],
]


@dataclass
class ChainSearchConfig:
    base: str = "cdarts_b_base"  # cdarts_a_base | cdarts_b_base | tiny | path to a JSON list of arch-string stages
    input_size: int = CHAIN_DEFAULTS["input_size"]
    stem_channels: int = 16
    head_channels: int = 1280
    epochs: int = 30
    warmup_epochs: int = 2  # w_S only, architecture weights frozen
    batch_size: int = 64
    train_fraction: float = 0.5
    val_fraction: float = 0.5
    w_lr: float = 0.5
    w_momentum: float = 0.9
    w_wd: float = 4e-5
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_wd: float = 3e-4
    distill_lambda: float = 4.0
    distill_kind: str = "kl"
    temperature: float = 2.0
    rebuild_every: int = 0  # steps between child derivations; 0 = once per epoch
    eval_train_steps: int = -1  # w_E steps on val after a rebuild; -1 = one epoch of val batches
    budget_madds: float | None = None  # target multiply-adds of the derived child (one image)
    budget_weight: float = 1.0
    budget_tolerance: float = 0.1
    grad_clip: float = 5.0
    seed: int = 0
    workers: int = 0
    alpha_init_std: float = 1e-3
    head_mid: int = 128  # embedding heads: 1x1 conv width, then the 2x2 conv's width (the reference code's 128, 768)
    head_embed: int = 768
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, dict[str, Any]] = {
    # CPU smoke runs: small inputs, small batches, short schedule, a faster architecture lr.
    "smoke32": dict(base="tiny", input_size=32, stem_channels=8, head_channels=128, epochs=3, warmup_epochs=1,
                    batch_size=8, w_lr=0.05, arch_lr=0.05, eval_train_steps=2, head_mid=16, head_embed=32),
    "smoke64": dict(base="cdarts_a_base", input_size=64, epochs=2, warmup_epochs=0, batch_size=8, w_lr=0.05,
                    arch_lr=0.05, eval_train_steps=2),
}


def resolve_base_option(base: str) -> str | list[list[str]]:
    if base == "tiny":
        return TINY_BASE
    if base in ("cdarts_a_base", "cdarts_b_base"):
        return base
    path = Path(base)
    if not path.is_file():
        raise SearchInputError(f"--base {base!r}: expected cdarts_a_base, cdarts_b_base, tiny or a JSON file of stages")
    try:
        stages = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SearchInputError(f"--base {base}: unreadable JSON ({exc}); expected a list of lists of arch strings") from None
    if not (isinstance(stages, list) and all(isinstance(s, list) and all(isinstance(a, str) for a in s) for s in stages)):
        raise SearchInputError(f"--base {base}: expected a JSON list of lists of arch strings")
    return stages


def _epoch_stream(loader, epoch: int) -> Iterator:
    """Batches of ``loader`` for one epoch, cycling if more are drawn; the order depends only on
    (sampler seed, epoch, cycle), so a resumed run reads exactly the batches an uninterrupted one would."""
    cycle = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch * 1000 + cycle)
        yield from loader
        cycle += 1


class ChainSearch:
    """Holds the supernet, the current child, the heads and the optimizers of one search run."""

    def __init__(self, cfg: ChainSearchConfig, num_classes: int, ctx: DistContext | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx or DistContext()
        dev = self.ctx.device
        torch.manual_seed(cfg.seed)
        self.supernet = ChainSupernet(
            resolve_base_option(cfg.base), num_classes=num_classes, input_size=cfg.input_size,
            stem_channels=cfg.stem_channels, head_channels=cfg.head_channels, alpha_init_std=cfg.alpha_init_std,
        ).to(dev)
        taps = self.supernet.tap_channels
        heads = dict(mid=cfg.head_mid, embed=cfg.head_embed)
        self.student_heads = nn.ModuleList(EmbeddingHead(c, num_classes, **heads) for c in taps).to(dev)
        self.teacher_heads = nn.ModuleList(EmbeddingHead(c, num_classes, **heads) for c in taps).to(dev)
        self.distill = MultiLevelDistillation(len(taps) + 1, cfg.distill_kind, cfg.temperature).to(dev)
        broadcast_(self._all_state_tensors(), self.ctx)  # identical start on every rank
        self.cost = CostModel(self.supernet, cfg.input_size)
        self.w_opt = torch.optim.SGD(self.supernet.weight_parameters(), cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_wd)
        self.arch_opt = torch.optim.Adam(self.supernet.arch_parameters() + list(self.distill.parameters()),
                                         cfg.arch_lr, betas=cfg.arch_betas, weight_decay=cfg.arch_wd)
        self.child: nn.Module | None = None
        self.child_choices: list[int] | None = None
        self.e_opt: torch.optim.Optimizer | None = None
        self.step = 0  # global step counter (drives the linear lr annealing)
        self.total_steps = 1

    def _all_state_tensors(self) -> list[torch.Tensor]:
        mods = [self.supernet, self.student_heads, self.teacher_heads, self.distill]
        return [t for m in mods for t in list(m.parameters()) + list(m.buffers())]

    # -- lr schedule: linear annealing to zero over all steps --------------------------------
    def _lr_factor(self) -> float:
        return max(0.0, 1.0 - self.step / self.total_steps)

    def _set_weight_lr(self) -> None:
        for opt in (self.w_opt, self.e_opt):
            if opt is not None:
                for g in opt.param_groups:
                    g["lr"] = self.cfg.w_lr * self._lr_factor()

    # -- the evaluation network ----------------------------------------------------------------
    def best_choices(self) -> list[int]:
        """The arg-max child (fitted to the budget if one is given); under DDP rank 0's, so that every rank
        builds the same child even if the ranks drifted (the log's alpha_rank_spread would show such drift)."""
        if self.cfg.budget_madds:
            choices = self.cost.fit_to_budget(self.supernet.alphas, self.cfg.budget_madds, self.cfg.budget_tolerance)
        else:
            choices = self.supernet.argmax_choices()
        if self.ctx.distributed:
            t = torch.tensor(choices, dtype=torch.int64, device=self.ctx.device)
            broadcast_([t], self.ctx)
            choices = [int(c) for c in t.tolist()]
        return choices

    def set_child(self, choices: list[int], state: dict | None = None) -> None:
        if state is None:
            _, child = build_child(self.supernet, choices)
        else:
            child = create_chain_model(derive_genotype(self.supernet, choices), num_classes=self.supernet.network.num_classes)
            child.load_state_dict(state)
        self.child = child.to(self.ctx.device)
        self.child_choices = list(choices)
        params = list(self.child.parameters()) + list(self.student_heads.parameters()) + list(self.teacher_heads.parameters())
        self.e_opt = torch.optim.SGD(params, self.cfg.w_lr * self._lr_factor(), momentum=self.cfg.w_momentum,
                                     weight_decay=self.cfg.w_wd)

    def sync_buffers(self) -> None:
        """Average the BN running statistics over ranks: gradient averaging keeps the weights in step, but
        each rank's statistics come from its own batches (and the checkpoint, the child and resume use them)."""
        if not self.ctx.distributed:
            return
        for module in (self.supernet, self.student_heads, self.teacher_heads, self.child):
            if module is not None:
                distribute_bn(module, self.ctx.world_size, reduce=True)

    def _e_params(self) -> list[nn.Parameter]:
        return [p for g in self.e_opt.param_groups for p in g["params"]]

    def _update(self, opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
        average_gradients(params, self.ctx)
        nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        opt.step()

    def train_child(self, val_iter: Iterator, steps: int) -> None:
        self.child.train()
        for _ in range(steps):
            x, y = (t.to(self.ctx.device) for t in next(val_iter))
            self.e_opt.zero_grad(set_to_none=True)
            F.cross_entropy(self.child(x), y).backward()
            self._update(self.e_opt, list(self.child.parameters()))

    # -- one step ----------------------------------------------------------------------------
    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Joint update of the architecture weights and the child on a val batch."""
        self.supernet.train()
        self.child.train()
        s_logits, s_feats = self.supernet.forward_with_levels(x)
        c_logits, c_feats = forward_levels(self.child, x, self.supernet.taps)
        student = [h(f) for h, f in zip(self.student_heads, s_feats)] + [s_logits]
        teacher = [h(f) for h, f in zip(self.teacher_heads, c_feats)] + [c_logits]
        ce_s, ce_c = F.cross_entropy(s_logits, y), F.cross_entropy(c_logits, y)
        distill = self.distill(student, teacher)
        loss = ce_s + ce_c + self.cfg.distill_lambda * distill
        expected = self.cost.expected_madds(self.supernet.choice_weights())
        penalty = budget_penalty(expected, self.cfg.budget_madds) if self.cfg.budget_madds else expected.new_zeros(())
        loss = loss + self.cfg.budget_weight * penalty
        self.arch_opt.zero_grad(set_to_none=True)
        self.e_opt.zero_grad(set_to_none=True)
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        self._update(self.arch_opt, [p for g in self.arch_opt.param_groups for p in g["params"]])
        self._update(self.e_opt, self._e_params())
        return {
            "val_ce_supernet": ce_s.item(), "val_ce_child": ce_c.item(), "distill": distill.item(),
            "budget_penalty": penalty.item(), "expected_madds": expected.item(),
            "val_acc_supernet": (s_logits.argmax(1) == y).float().mean().item(),
            "val_acc_child": (c_logits.argmax(1) == y).float().mean().item(),
        }

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One update of w_S on a train batch with CE."""
        self.supernet.train()
        self.w_opt.zero_grad(set_to_none=True)
        logits = self.supernet(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        self._update(self.w_opt, self.supernet.weight_parameters())
        return {"train_ce": loss.item(), "train_acc": (logits.argmax(1) == y).float().mean().item()}

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "epoch": epoch, "step": self.step, "config": _config_json(self.cfg),
            "supernet": self.supernet.state_dict(), "student_heads": self.student_heads.state_dict(),
            "teacher_heads": self.teacher_heads.state_dict(), "distill": self.distill.state_dict(),
            "w_opt": self.w_opt.state_dict(), "arch_opt": self.arch_opt.state_dict(),
            "child_choices": self.child_choices, "child": self.child.state_dict() if self.child else None,
            "e_opt": self.e_opt.state_dict() if self.e_opt else None, "rng": capture_rng(),
            "world_size": self.ctx.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> int:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise SearchInputError("the checkpoint is not from a chain search; point --out at a chain search run")
        check_resume_options(state, self.cfg, self.ctx.world_size)
        self.supernet.load_state_dict(state["supernet"])
        self.student_heads.load_state_dict(state["student_heads"])
        self.teacher_heads.load_state_dict(state["teacher_heads"])
        self.distill.load_state_dict(state["distill"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.arch_opt.load_state_dict(state["arch_opt"])
        self.step = state["step"]
        if state["child_choices"] is not None:
            self.set_child(state["child_choices"], state["child"])
            self.e_opt.load_state_dict(state["e_opt"])
        restore_rng(state["rng"])
        return state["epoch"]


def check_config(cfg: ChainSearchConfig) -> ChainSearchConfig:
    """``cfg`` if its values can run; otherwise a one-line :class:`SearchInputError` naming the option."""
    if cfg.distill_kind not in DISTILL_KINDS:
        raise SearchInputError(f"--distill-kind {cfg.distill_kind!r}: expected one of {', '.join(DISTILL_KINDS)}")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.input_size < 8:
        raise SearchInputError("--epochs and --batch-size must be positive and --input-size at least 8")
    if cfg.budget_madds is not None and cfg.budget_madds <= 0:
        raise SearchInputError("--budget must be a positive number of multiply-adds, e.g. 300e6")
    return cfg


def _config_json(cfg: ChainSearchConfig) -> str:
    return json.dumps(asdict(cfg), sort_keys=True)


def check_resume_options(state: dict[str, Any], cfg: ChainSearchConfig, world_size: int) -> None:
    """Refuse to resume with options other than the checkpointed run's: the schedule, the data split and the
    sampler order all depend on them, so a mixed run would match neither setting."""
    saved = json.loads(state.get("config", "{}"))
    now = json.loads(_config_json(cfg))
    changed = [k for k in sorted(set(saved) | set(now)) if k not in RESUME_MAY_DIFFER and saved.get(k) != now.get(k)]
    if changed:
        shown = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise SearchInputError(f"--resume: options differ from the checkpointed run ({shown}{more}); "
                               "resume with the run's original options or choose a new --out")
    saved_world = int(state.get("world_size", 1))
    if saved_world != world_size:
        raise SearchInputError(f"--resume: the checkpoint was written by {saved_world} processes, this run has "
                               f"{world_size}; resume with the same --nproc_per_node")


def alpha_entropy(alphas: torch.Tensor) -> float:
    p = F.softmax(alphas.detach(), -1)
    return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean() / math.log(p.shape[-1]))


def run_search(cfg: ChainSearchConfig, train_loader, val_loader, num_classes: int, out: Path,
               ctx: DistContext | None = None, resume: bool = False) -> ChainGenotype:
    """The whole search; returns the final genotype (also written to ``out/genotype.json`` by rank 0)."""
    ctx = ctx or DistContext()
    search = ChainSearch(cfg, num_classes, ctx)
    steps_per_epoch = min(len(train_loader), len(val_loader))
    search.total_steps = max(1, cfg.epochs * steps_per_epoch)
    rebuild_every = cfg.rebuild_every or steps_per_epoch
    eval_steps = steps_per_epoch if cfg.eval_train_steps < 0 else cfg.eval_train_steps
    log = EpochLog(out / "log.jsonl")
    start = 0
    if resume:
        start = search.load_state_dict(load_checkpoint(out / "checkpoint.pt"))
        if ctx.is_main:
            log.truncate_to(start)
    genotype = derive_genotype(search.supernet, search.best_choices())
    for epoch in tqdm(range(start, cfg.epochs), desc="chain search", disable=not ctx.is_main, initial=start,
                      total=cfg.epochs):
        sums: dict[str, float] = {}
        warm = epoch < cfg.warmup_epochs
        train_iter, val_iter = _epoch_stream(train_loader, epoch), _epoch_stream(val_loader, epoch)
        for i in tqdm(range(steps_per_epoch), desc=f"epoch {epoch}", leave=False, disable=not ctx.is_main):
            search._set_weight_lr()
            metrics: dict[str, float] = {}
            if not warm:
                if search.child is None or i % rebuild_every == 0:
                    choices = search.best_choices()
                    if choices != search.child_choices:
                        search.set_child(choices)
                        search.train_child(val_iter, eval_steps)
                x, y = (t.to(ctx.device) for t in next(val_iter))
                metrics.update(search.arch_step(x, y))
            x, y = (t.to(ctx.device) for t in next(train_iter))
            metrics.update(search.weight_step(x, y))
            search.step += 1
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
        row = mean_over_ranks({k: v / steps_per_epoch for k, v in sums.items()}, ctx)
        search.sync_buffers()
        choices = search.best_choices()
        genotype = derive_genotype(search.supernet, choices)
        # 0.0 when averaged gradients kept the ranks in step
        row["alpha_rank_spread"] = rank_spread(search.supernet.arch_parameters(), ctx)
        row.update(epoch=epoch, warmup=warm, alpha_entropy=alpha_entropy(search.supernet.alphas),
                   child_madds=search.cost.child_madds(choices),
                   expected_madds=float(search.cost.expected_madds(search.supernet.choice_weights().detach())),
                   budget_madds=cfg.budget_madds, choices=choices, genotype=genotype.arch_strings())
        if ctx.is_main:
            log.append(row)  # before the checkpoint: a resume truncates rows past the checkpoint's epoch
            save(genotype, out / "genotype.json")
            save_checkpoint(search.state_dict(epoch + 1), out / "checkpoint.pt")
            tqdm.write(
                f"epoch {epoch}: train_ce {row.get('train_ce', float('nan')):.3f} "
                f"val_acc supernet/child {row.get('val_acc_supernet', float('nan')):.3f}/"
                f"{row.get('val_acc_child', float('nan')):.3f} child {row['child_madds'] / 1e6:.1f}M MAdds"
                + (f" (budget {cfg.budget_madds / 1e6:.1f}M)" if cfg.budget_madds else "")
            )
    final = search.best_choices()  # on every rank: it is a collective under DDP
    if ctx.is_main:
        # the final child with inherited weights, loadable into create_model_from_genotype(genotype.json)
        _, child = build_child(search.supernet, final)
        save_checkpoint(child.state_dict(), out / "child.pth")
        draw_choice_weights(search.supernet, final, out / "choices.png")
    return genotype


def draw_choice_weights(supernet: ChainSupernet, choices: list[int], path: Path) -> None:
    """A heatmap of the softmax choice weights per searchable block, the derived choice boxed."""
    from cdarts_deploy.drawing.figures import pyplot, save_figure
    from cdarts_deploy.genotype import CHAIN_CHOICES

    plt = pyplot()
    probs = supernet.choice_weights().detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(4 + 0.1 * len(choices), 1 + 0.3 * len(choices)))
    im = ax.imshow(probs, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(CHAIN_CHOICES)), [f"k{k} e{e}" for k, e in CHAIN_CHOICES])
    ax.set_yticks(range(len(choices)), [f"stage {u.stage} block {u.arch_index}" for u in supernet.units])
    for row, c in enumerate(choices):
        ax.add_patch(plt.Rectangle((c - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(im, ax=ax, label="choice weight")
    ax.set_title("chain search: choice weights (red: derived child)")
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
