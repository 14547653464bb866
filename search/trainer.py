"""Algorithm 1 (paper Section 3.2) for any search space: separate learning, joint learning, the w_S update.

The loop drives a *space* (:class:`search.space.SearchSpace`): ``search.cell_space.CellSpace``
for DARTS cells, ``search.chain_space.ChainSpace`` for MBConv chains.  Per epoch, after
``--warmup-epochs`` epochs of w_S alone:

1. every ``--update-epochs`` epochs (S_U), Stage 1: discretize alpha, build the
   evaluation network inheriting w_E from the space's weight pool, train w_E on val
   for S_E steps with cross-entropy;
2. per step, Stage 2 on a val batch: CE(search) + CE(eval) + lambda * multi-level
   distillation (+ lambda' * Eq. 11 penalty, + the space's cost term); alpha (Adam)
   and w_E (SGD) updated together (Eq. 8).  The distillation levels are the stage
   features of both networks projected by one set of embedding heads
   (:class:`search.distill.EmbeddingHeads`) that the distillation never trains;
3. on a train batch: CE of the search network; w_S updated (Eq. 6).

Each epoch's randomness (augmentation, drop path) is seeded from (seed, epoch,
rank), and data order from (seed, epoch) through the distributed samplers, so a
run resumed from an epoch checkpoint repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import dataclasses
import math
import time
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.utils import distribute_bn
from torch import nn
from tqdm import tqdm

from cdarts_deploy import genotype as gt

from .checkpoint import capture_rng, restore_rng, save_checkpoint
from .config import SearchConfig, level_weights
from .data import SearchData, make_loader
from .distill import MultiLevelDistillation
from .distributed import DistContext, average_gradients, broadcast_, mean_over_ranks, rank_spread
from .epoch_metrics import Meter, epoch_summary
from .param_scopes import buffers_kept, frozen, optimizer_params, set_lr, stochastic_parts
from .regularization import reg_coefficient
from .runlog import EpochLog
from .space import SearchSpace

CHECKPOINT_FORMAT = "cdarts-search-checkpoint"


class CyclicSearch:
    """One search run: the space, the three optimizers, the live evaluation network, the schedule."""

    def __init__(self, cfg: SearchConfig, space: SearchSpace, data: SearchData, ctx: DistContext, out: Path) -> None:
        self.cfg, self.space, self.ctx, self.out = cfg, space, ctx, out
        self.device = ctx.device
        # Before the optimizers exist: conversion replaces parameter data, not the parameters.
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        for module in space.bn_modules():
            module.to(memory_format=self.memory_format)
        self.train_loader = make_loader(data.train, cfg.batch_size, ctx, cfg.seed, cfg.workers)
        self.val_loader = make_loader(data.val, cfg.batch_size, ctx, cfg.seed + 1, cfg.workers)
        self.eval_loader = make_loader(data.val, cfg.batch_size, ctx, cfg.seed + 2, cfg.workers)
        self.steps = min(len(self.train_loader), len(self.val_loader))
        if cfg.max_steps:
            self.steps = min(self.steps, cfg.max_steps)
        eval_pass = min(len(self.eval_loader), cfg.max_steps) if cfg.max_steps else len(self.eval_loader)
        if cfg.eval_steps > 0:
            self.eval_steps = cfg.eval_steps
        else:
            self.eval_steps = max(1, round(cfg.eval_epochs * eval_pass)) if cfg.eval_epochs > 0 else 0
        self.total_epochs = cfg.warmup_epochs + cfg.epochs
        self.opt_w = torch.optim.SGD(space.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay)
        self.opt_alpha = torch.optim.Adam(space.arch_parameters(), lr=cfg.arch_lr,
                                          betas=(cfg.arch_beta1, cfg.arch_beta2), weight_decay=cfg.arch_weight_decay)
        self.distiller = MultiLevelDistillation(space.levels, cfg.distill_loss, cfg.distill_temperature,
                                                level_weights(cfg, space.levels)).to(self.device)
        # Updated with w_E besides it: the shared embedding heads, whose only gradient is the optional head
        # cross-entropy (--head-ce-weight).  The level weights are fixed: trained on the loss they weigh,
        # they would collapse onto one level.
        self.extra = nn.ModuleDict({"heads": space.heads})
        shared = {id(p) for p in space.shared_with_eval()}
        self.search_only = [p for p in space.weight_parameters() if id(p) not in shared]
        self.branch: nn.Module | None = None
        self.opt_e: torch.optim.Optimizer | None = None
        self.branch_genotype: gt.Genotype | None = None
        self.start_epoch = 0
        self.log = EpochLog(out / "log.jsonl")

    # ----- schedule ----------------------------------------------------------------------------------

    def lr_at(self, epoch: int) -> float:
        c = self.cfg
        return c.lr_min + 0.5 * (c.lr - c.lr_min) * (1 + math.cos(math.pi * epoch / max(1, self.total_epochs)))

    def reg_at(self, search_epoch: int) -> float:
        if self.cfg.method != "cdarts" or self.cfg.reg_lambda <= 0:
            return 0.0
        return reg_coefficient(search_epoch, self.cfg.reg_lambda, self.cfg.reg_decay_epochs)

    def rebuilds_at(self, epoch: int) -> bool:
        e = epoch - self.cfg.warmup_epochs
        return self.cfg.method == "cdarts" and e >= 0 and e % self.cfg.update_epochs == 0

    # ----- the three updates -----------------------------------------------------------------------------

    def _eval_ce(self, logits: torch.Tensor, feats: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, y)
        if self.cfg.head_ce_weight:  # opt-in: the heads learn to classify the evaluation network's stages
            loss = loss + self.cfg.head_ce_weight * self.space.heads.classification_loss(feats, y)
        return loss

    def _clip(self, params: list[nn.Parameter]) -> None:
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], self.cfg.grad_clip)

    def eval_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter) -> None:
        """Stage 1: w_E alone on a val batch with cross-entropy."""
        assert self.branch is not None and self.opt_e is not None
        logits, feats = self.branch(x)
        loss = self._eval_ce(logits, feats, y)
        self.opt_e.zero_grad(set_to_none=True)
        loss.backward()
        params = optimizer_params(self.opt_e)
        average_gradients(params, self.ctx)
        self._clip(params)
        self.opt_e.step()
        meter.add("stage1_loss", loss, y.numel())
        meter.add_acc("stage1_acc", logits, y)

    def joint_step(self, x: torch.Tensor, y: torch.Tensor, reg: float, meter: Meter) -> None:
        """Stage 2 (Eq. 8): alpha and w_E together on a val batch; w_S stays fixed.

        The loss CE_S + CE_E + lambda * L_distill + penalties is differentiated in two passes so that the
        search network's graph and the evaluation network's graph are never held at once (peak memory):
        first the student side, with the teacher's levels as constants from a graph-free forward (the
        same values: same weights, same batch, BatchNorm on batch statistics), then the evaluation side
        with the student's levels as constants.  The gradients are those of the single loss: each
        parameter depends on only one side, and the distillation term is differentiated with respect
        to each side's levels at the other side's values.  That replay gives the same values only when
        the evaluation network's training forward is deterministic; with drop path or dropout it would
        draw other masks than the differentiated forward, so such a network takes the single pass.
        """
        assert self.branch is not None and self.opt_e is not None
        with frozen(self.search_only):
            self.opt_alpha.zero_grad(set_to_none=True)
            self.opt_e.zero_grad(set_to_none=True)
            if stochastic_parts(self.branch):
                terms = self._joint_single_pass(x, y, reg, meter)
            else:
                terms = self._joint_two_pass(x, y, reg, meter)
            params_e = optimizer_params(self.opt_e)
            alpha = self.space.arch_parameters()
            average_gradients(alpha + params_e, self.ctx)
            self._clip(params_e)
            self._clip(alpha)
            self.opt_alpha.step()
            self.opt_e.step()
        ce_s, ce_e, distill, s_logits, e_logits = terms
        meter.add("val_loss_search", ce_s, y.numel())
        meter.add("val_loss_eval", ce_e, y.numel())
        meter.add("distill_loss", distill, y.numel())
        meter.add_acc("val_acc_search", s_logits, y)
        meter.add_acc("val_acc_eval", e_logits, y)

    def _student_loss(self, x: torch.Tensor, y: torch.Tensor, teacher: list[torch.Tensor], reg: float,
                      meter: Meter) -> tuple[torch.Tensor, ...]:
        """CE_S + lambda * L_distill(student, ``teacher``) + penalties; also the student's levels."""
        s_logits, s_feats = self.space.student(x)
        s_levels = self.space.heads.project(s_feats)
        ce_s = F.cross_entropy(s_logits, y)
        distill = self.distiller(s_levels, teacher)
        loss_s = ce_s + self.cfg.distill_lambda * distill
        penalty = self.space.reg_loss() if reg > 0 else None
        if penalty is not None:
            loss_s = loss_s + reg * penalty
            meter.add("reg_penalty", penalty, y.numel())
        cost = self.space.arch_cost()
        if cost is not None:
            loss_s = loss_s + cost
            meter.add("arch_cost", cost, y.numel())
        return loss_s, ce_s, distill, s_logits, s_levels

    def _joint_two_pass(self, x: torch.Tensor, y: torch.Tensor, reg: float, meter: Meter) -> tuple:
        assert self.branch is not None
        with torch.no_grad(), buffers_kept(self.branch):  # a replay: its BatchNorm update happens below
            teacher_values = self.space.heads.project(self.branch(x)[1])
        loss_s, ce_s, distill, s_logits, s_levels = self._student_loss(x, y, teacher_values, reg, meter)
        loss_s.backward()
        student_values = [s.detach() for s in s_levels]
        del s_levels, loss_s  # frees the search network's graph before the evaluation network's is built
        e_logits, e_feats = self.branch(x)
        ce_e = self._eval_ce(e_logits, e_feats, y)
        loss_e = ce_e
        if not self.cfg.detach_teacher:  # the paper lets the distillation gradient reach w_E
            loss_e = loss_e + self.cfg.distill_lambda * self.distiller(student_values,
                                                                       self.space.heads.project(e_feats))
        loss_e.backward()
        return ce_s, ce_e, distill, s_logits, e_logits

    def _joint_single_pass(self, x: torch.Tensor, y: torch.Tensor, reg: float, meter: Meter) -> tuple:
        """Eq. 8 in one graph: both networks' forwards are differentiated as drawn (one set of masks)."""
        assert self.branch is not None
        e_logits, e_feats = self.branch(x)
        e_levels = self.space.heads.project(e_feats)
        teacher = [t.detach() for t in e_levels] if self.cfg.detach_teacher else e_levels
        loss_s, ce_s, distill, s_logits, _ = self._student_loss(x, y, teacher, reg, meter)
        ce_e = self._eval_ce(e_logits, e_feats, y)
        (loss_s + ce_e).backward()
        return ce_s, ce_e, distill, s_logits, e_logits

    def _search_net_step(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                         params: list[nn.Parameter], fixed: list[nn.Parameter],
                         clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One cross-entropy update of the search network's ``params``; ``fixed`` gets no gradient."""
        with frozen(fixed):
            logits = self.space.search_logits(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(params, self.ctx)
            if clip:
                self._clip(params)
            optimizer.step()
        return logits, loss

    def darts_arch_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter) -> None:
        """First-order DARTS: alpha alone on a val batch with the search network's cross-entropy."""
        logits, loss = self._search_net_step(x, y, self.opt_alpha, self.space.arch_parameters(),
                                             fixed=self.space.weight_parameters(), clip=True)
        meter.add("val_loss_search", loss, y.numel())
        meter.add_acc("val_acc_search", logits, y)

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter) -> None:
        """Eq. 6: w_S on a train batch with cross-entropy; alpha stays fixed."""
        logits, loss = self._search_net_step(x, y, self.opt_w, self.space.weight_parameters(),
                                             fixed=self.space.arch_parameters(), clip=True)
        meter.add("train_loss", loss, y.numel())
        meter.add_acc("train_acc", logits, y)

    # ----- evaluation network ------------------------------------------------------------------------

    def derive(self) -> gt.Genotype:
        # Averaged gradients keep alpha identical on every rank (the log records the spread);
        # the broadcast makes the derived genotype identical even if a rank drifted by rounding.
        self.alpha_spread = rank_spread(self.space.arch_parameters(), self.ctx)
        broadcast_(self.space.arch_parameters(), self.ctx)
        return self.space.derive()

    def install_branch(self, genotype: gt.Genotype, build_id: int, lr: float) -> None:
        """Write the outgoing network back to the pool, build the new one, rebuild its optimizer."""
        if self.branch is not None:
            self.space.write_back(self.opt_e)
        self.branch = self.space.build_eval(genotype, build_id).to(memory_format=self.memory_format)
        self.branch.train()
        self.opt_e = self.space.eval_optimizer(self.extra, lr)
        self.branch_genotype = genotype

    def separate_learning(self, epoch: int, meter: Meter) -> None:
        """Stage 1: discretize, rebuild with inheritance, train w_E on val for S_E."""
        lr = self.lr_at(epoch)
        self.install_branch(self.derive(), build_id=epoch, lr=lr)
        meter.add("inherited_ops", float(self.space.inherited), 1)
        for x, y in islice(self._cycle(self.eval_loader, epoch), self.eval_steps):
            self.eval_step(x.to(self.device, memory_format=self.memory_format), y.to(self.device), meter)

    def _cycle(self, loader: Any, epoch: int):
        """Passes over ``loader`` (S_E may exceed one epoch), each in a fresh order."""
        k = 0
        while True:
            loader.sampler.set_epoch(epoch * 1000 + k)
            yield from loader
            k += 1

    # ----- epochs ------------------------------------------------------------------------------------------

    def run_epoch(self, epoch: int, bar: Any) -> dict[str, Any]:
        cfg = self.cfg
        torch.manual_seed(cfg.seed * 100_000 + epoch * 100 + self.ctx.rank)
        lr = self.lr_at(epoch)
        set_lr(self.opt_w, lr)
        set_lr(self.opt_e, lr)
        search_epoch = epoch - cfg.warmup_epochs
        phase = "warmup" if search_epoch < 0 else "search"
        reg = self.reg_at(search_epoch) if phase == "search" else 0.0
        meter = Meter()
        started = time.perf_counter()
        self.space.train()
        if self.rebuilds_at(epoch) or (phase == "search" and cfg.method == "cdarts" and self.branch is None):
            self.separate_learning(epoch, meter)
        self.train_loader.sampler.set_epoch(epoch)
        self.val_loader.sampler.set_epoch(epoch)
        steps = tqdm(total=self.steps, desc=f"epoch {epoch}", leave=False, disable=bar.disable, dynamic_ncols=True)
        for (xt, yt), (xv, yv) in islice(zip(self.train_loader, self.val_loader), self.steps):
            xt, xv = (t.to(self.device, non_blocking=True, memory_format=self.memory_format) for t in (xt, xv))
            yt, yv = (t.to(self.device, non_blocking=True) for t in (yt, yv))
            if phase == "search":
                if cfg.method == "cdarts":
                    self.joint_step(xv, yv, reg, meter)
                else:
                    self.darts_arch_step(xv, yv, meter)
            self.weight_step(xt, yt, meter)
            steps.update(1)
        steps.close()
        self.sync_batchnorm()
        metrics = mean_over_ranks(meter.means(), self.ctx)
        genotype = self.derive()
        row: dict[str, Any] = {"epoch": epoch, "phase": phase, "method": cfg.method, "lr": round(lr, 6),
                               "reg_coef": round(reg, 6)}
        row.update({k: round(v, 5) for k, v in sorted(metrics.items())})
        row["level_weights"] = [round(v, 4) for v in self.distiller.level_weights().tolist()]
        row.update(self.space.stats(genotype))
        row["alpha_rank_spread"] = self.alpha_spread
        row["seconds"] = round(time.perf_counter() - started, 2)
        row["genotype"] = gt.to_dict(genotype)
        return {"row": row, "genotype": genotype}

    def sync_batchnorm(self) -> None:
        """Average BN running statistics over processes: averaged gradients keep the weights in step, but
        each process's statistics come from its own batches (and the checkpoint, the derived network and a
        resume use them)."""
        if not self.ctx.distributed:
            return
        modules = list(self.space.bn_modules()) + ([self.branch] if self.branch is not None else [])
        for module in modules:
            distribute_bn(module, self.ctx.world_size, reduce=True)

    def checkpoint_state(self, next_epoch: int) -> dict[str, Any]:
        if self.branch is not None:
            self.space.write_back(self.opt_e)  # the pool then holds every weight of the live network
        return {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "epoch": next_epoch,
            "config": dataclasses.asdict(self.cfg),
            "world_size": self.ctx.world_size,
            "space": self.space.state_dict(),
            "opt_w": self.opt_w.state_dict(),
            "opt_alpha": self.opt_alpha.state_dict(),
            "branch_genotype": gt.dumps(self.branch_genotype) if self.branch_genotype is not None else None,
            "rng": capture_rng(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.space.load_state_dict(state["space"])
        self.opt_w.load_state_dict(state["opt_w"])
        self.opt_alpha.load_state_dict(state["opt_alpha"])
        restore_rng(state["rng"])
        self.start_epoch = int(state["epoch"])
        finished = self.start_epoch >= self.total_epochs
        if state["branch_genotype"] is not None and (finished or not self.rebuilds_at(self.start_epoch)):
            # The live evaluation network continues into the next epoch, or (every epoch done, the final files
            # not yet written) is the one the final files come from: rebuild it from the pool.
            self.install_branch(gt.loads(state["branch_genotype"], "checkpoint"), build_id=-1,
                                lr=self.lr_at(self.start_epoch))

    def run(self) -> gt.Genotype:
        main = self.ctx.is_main
        if main:
            self.log.truncate_to(self.start_epoch)
        bar = tqdm(range(self.start_epoch, self.total_epochs), desc=f"{self.cfg.method} search", unit="epoch",
                   disable=not (self.cfg.progress and main), dynamic_ncols=True)
        genotype = None
        for epoch in bar:
            result = self.run_epoch(epoch, bar)
            genotype, row = result["genotype"], result["row"]
            state = self.checkpoint_state(epoch + 1)
            if main:
                self.log.append(row)
                gt.save(genotype, self.out / "genotype.json")
                save_checkpoint(state, self.out / "checkpoint.pt")
                tqdm.write(epoch_summary(row))
        if genotype is None:
            genotype = self.derive()
        if main:
            gt.save(genotype, self.out / "genotype.json")
            self.space.finish(genotype, self.out, self.branch)
        return genotype
