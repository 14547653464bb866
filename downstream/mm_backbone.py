"""CDARTS networks as MMDetection / MMSegmentation backbones.

Enable in any mmdet 3.x / mmseg 1.x config with::

    custom_imports = dict(imports=['downstream.mm_backbone', 'downstream.checkpoints'], allow_failed_imports=False)
    custom_hooks = [dict(type='PlainCheckpointHook')]  # checkpoints torch.load(weights_only=True) reads
    model = dict(backbone=dict(type='CDARTSBackbone', genotype='cdarts_b', out_indices=(1, 2, 3, 4)))

``genotype`` is a zoo name or a genotype file (cell or chain kind).  The
backbone wraps the timm feature model of ``backbones.factory`` and returns the
feature maps at ``out_indices`` (indices into the model's ``feature_info``
levels; see :attr:`CDARTSBackbone.level_info` for channels and strides).

``frozen_stages=k`` freezes every parameter that feature level ``k`` depends
on (the stem and all stages up to level ``k``; ``-1`` freezes nothing), found
by autograd rather than by module names, so it holds for both network kinds.

``sync_bn=True`` turns every BatchNorm into SyncBatchNorm with timm's converter,
which keeps the activation fused into timm's ``BatchNormAct2d`` layers (66 of the
67 norm layers of a chain network).  The plain converters (mmengine's
``sync_bn='torch'``/``'mmcv'`` config key, ``nn.SyncBatchNorm.convert_sync_batchnorm``)
replace those layers by a bare SyncBatchNorm that drops the activation; the
backbone repairs that the next time it is put in train or eval mode, which the
Runner's loops do before every epoch or evaluation.

``init_cfg=dict(type='Pretrained', checkpoint=PATH, prefix=...)`` loads a
local checkpoint of the timm classification model (or of this backbone, or of
a whole detector/segmentor with ``prefix='backbone.'``), read with
``weights_only=True``; classifier weights are ignored and shape mismatches
(e.g. the 320-channel last stage of the segmentation variant) are reported,
not fatal.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.layers import BatchNormAct2d, SyncBatchNormAct
from timm.layers import convert_sync_batchnorm as timm_convert_sync_batchnorm
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from backbones.checkpoint_io import CheckpointError, extract_state_dict, read_checkpoint
from backbones.factory import create_model_from_genotype
from cdarts_deploy.genotype import CellGenotype, ChainGenotype, Genotype, load

__all__ = ["CDARTSBackbone", "read_state_dict"]


def read_state_dict(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """A tensor state dict from a local checkpoint, loaded with ``weights_only=True``.

    Accepts a bare state dict or one nested under the usual keys (mmengine's
    ``state_dict``, timm's ``state_dict_ema`` / ``model``); strips ``module.``.
    A missing, unsafe or tensor-less file is a one-line :class:`CheckpointError`.
    """
    return extract_state_dict(read_checkpoint(path, what="init_cfg.checkpoint"), path)


def _normalized(key: str) -> str:
    # timm's feature wrappers rename modules: FeatureGetterNet adds 'model.', FeatureListNet
    # flattens 'blocks.0' to 'blocks_0'.  Comparing with dots turned into underscores and
    # without those prefixes matches classification-model keys to feature-model keys.
    for prefix in ("body.", "model."):
        key = key.removeprefix(prefix)
    return key.replace(".", "_")


class CDARTSBackbone(BaseModule):
    """A searched CDARTS network (DARTS-cell or chain) as a multi-scale backbone.

    Args:
        genotype: zoo name (e.g. ``'cdarts_b'``, ``'cdarts_imagenet'``) or path to a genotype file.
        out_indices: feature levels to return; ``None`` returns every level.
        frozen_stages: freeze everything feature level ``frozen_stages`` depends on; -1 freezes nothing.
        norm_eval: keep every BatchNorm in eval mode while training (frozen statistics).
        sync_bn: convert every BatchNorm to SyncBatchNorm (timm's converter: fused activations are kept).
        last_stage_channels: chain genotypes only; 320 gives the segmentation variant
            (the last stage becomes a 1x1 conv to 320 channels, as in FasterSeg).
        model_kwargs: further arguments for ``create_model_from_genotype`` (e.g. ``layout``, ``width``,
            ``cells`` for cell genotypes, ``drop_path_rate``).
        init_cfg: mmengine init config; ``dict(type='Pretrained', checkpoint=PATH, prefix=None)``.
    """

    def __init__(
        self,
        genotype: Union[str, os.PathLike, Genotype],
        out_indices: Optional[Sequence[int]] = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        last_stage_channels: Optional[int] = None,
        model_kwargs: Optional[dict] = None,
        sync_bn: bool = False,
        init_cfg: Optional[Union[dict, list]] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)

        geno = genotype if isinstance(genotype, (CellGenotype, ChainGenotype)) else load(genotype)
        kwargs = dict(model_kwargs or {})
        if last_stage_channels is not None:
            if not isinstance(geno, ChainGenotype):
                raise ValueError("last_stage_channels applies to chain genotypes (cdarts_a, cdarts_b) only")
            kwargs["last_stage_channels"] = last_stage_channels
        self.genotype = geno

        # Probe the number of levels once, then build only up to the deepest requested one so
        # that every parameter is used (DDP needs no find_unused_parameters).
        probe = create_model_from_genotype(geno, features_only=True, **kwargs)
        num_levels = len(probe.feature_info.info)
        out = tuple(range(num_levels)) if out_indices is None else tuple(int(i) for i in out_indices)
        bad = [i for i in out if not 0 <= i < num_levels]
        if not out or bad or len(set(out)) != len(out):
            raise ValueError(
                f"out_indices {tuple(out_indices) if out_indices is not None else None} invalid: "
                f"this network has feature levels 0..{num_levels - 1} ({self._describe(probe)})"
            )
        if max(out) == num_levels - 1:
            self.body = probe
        else:
            del probe
            self.body = create_model_from_genotype(
                geno, features_only=True, out_indices=tuple(range(max(out) + 1)), **kwargs
            )
        self.out_indices = out
        self.level_info: list[dict[str, Any]] = [
            dict(channels=info["num_chs"], stride=info["reduction"], module=info.get("module"))
            for info in self.body.feature_info.info
        ]
        self.out_channels: list[int] = [self.level_info[i]["channels"] for i in out]
        self.out_strides: list[int] = [self.level_info[i]["stride"] for i in out]
        if frozen_stages >= num_levels:
            raise ValueError(f"frozen_stages={frozen_stages} but this network has levels 0..{num_levels - 1}")
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._frozen_params: list[str] = []
        self._freeze_stages()
        if sync_bn:
            self.convert_sync_batchnorm()

    @staticmethod
    def _describe(model: nn.Module) -> str:
        return ", ".join(f"{i}: {f['num_chs']}ch/{f['reduction']}" for i, f in enumerate(model.feature_info.info))

    # ----- freezing -------------------------------------------------------------------------

    def _params_feeding(self, level: int) -> set[str]:
        """Names of the parameters that feature ``level`` depends on (found with autograd)."""
        named = [(n, p) for n, p in self.body.named_parameters()]
        stride = max(info["stride"] for info in self.level_info)
        size = max(64, 2 * stride)
        was_training = self.body.training
        self.body.eval()  # no BN statistics updates and no drop path from this probe
        try:
            with torch.enable_grad():
                feats = self.body(torch.zeros(1, 3, size, size))
                grads = torch.autograd.grad(
                    feats[level].sum(), [p for _, p in named], allow_unused=True, materialize_grads=False
                )
        finally:
            self.body.train(was_training)
        return {n for (n, _), g in zip(named, grads) if g is not None}

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = self._params_feeding(self.frozen_stages)
        self._frozen_params = sorted(frozen)
        for name, param in self.body.named_parameters():
            if name in frozen:
                param.requires_grad_(False)
        for m in self._frozen_norms():
            m.eval()

    def _frozen_norms(self) -> list[nn.Module]:
        # Normalization layers whose affine parameters are frozen also keep their statistics.  Found
        # from the parameters each time (not a cached list): a SyncBN conversion replaces the modules
        # but keeps the same Parameter objects.
        return [m for m in self.body.modules()
                if isinstance(m, _BatchNorm) and any(not p.requires_grad for p in m.parameters(recurse=False))]

    def train(self, mode: bool = True) -> "CDARTSBackbone":
        self.restore_fused_activations()
        super().train(mode)
        if mode:
            for m in self._frozen_norms():
                m.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, _BatchNorm):
                        m.eval()
        return self

    # ----- SyncBN -----------------------------------------------------------------------------

    def convert_sync_batchnorm(self, process_group: Any = None) -> "CDARTSBackbone":
        """Turn every BatchNorm into SyncBatchNorm, keeping the activations fused into timm's layers."""
        self.restore_fused_activations()
        was_training = self.training
        self.body = timm_convert_sync_batchnorm(self.body, process_group)
        self.train(was_training)
        return self

    def restore_fused_activations(self) -> int:
        """Give back the activation a plain SyncBN conversion dropped; returns the number of layers repaired.

        torch's and mmengine's converters build a bare SyncBatchNorm for each ``BatchNormAct2d`` and
        re-attach its children, so the ``act``/``drop`` modules are still there but no longer called
        (and so does mmengine's Runner when it reverts SyncBN to ``_BatchNormXd`` without a process group).
        Switching the layer's class to one that calls them restores the exact computation.
        """
        repaired = 0
        for module in self.body.modules():
            if isinstance(module, _BatchNorm) and not _fuses_activation(module) and "act" in module._modules:
                module.__class__ = _with_activation(type(module))
                repaired += 1
        if repaired:
            print_log(f"CDARTSBackbone: gave {repaired} norm layers back the activation a BatchNorm conversion "
                      "dropped (to convert to SyncBN, prefer the backbone's sync_bn=True)", logger="current")
        return repaired

    # ----- weights ----------------------------------------------------------------------------

    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get("type") == "Pretrained":
            self.load_pretrained(cfg["checkpoint"], prefix=cfg.get("prefix"))
            self._is_init = True
            return
        super().init_weights()

    def load_pretrained(self, checkpoint: Union[str, os.PathLike], prefix: Optional[str] = None) -> dict[str, list]:
        """Copy matching weights from a local checkpoint; returns the keys that were skipped."""
        state = read_state_dict(checkpoint)
        if prefix:
            prefix = prefix if prefix.endswith(".") else prefix + "."
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not state:
                raise CheckpointError(f"checkpoint {checkpoint} has no keys starting with prefix '{prefix}'; "
                                      "check init_cfg.prefix")
        by_name = {_normalized(k): v for k, v in state.items()}
        own = self.body.state_dict()
        loaded, mismatched, missing = {}, [], []
        for key, value in own.items():
            src = by_name.get(_normalized(key))
            if src is None:
                missing.append(key)
            elif src.shape != value.shape:
                mismatched.append(f"{key} {tuple(src.shape)} vs {tuple(value.shape)}")
            else:
                loaded[key] = src
        if not loaded:
            raise CheckpointError(
                f"checkpoint {checkpoint} shares no weights with this {type(self.body).__name__} "
                f"(prefix={prefix!r}); check the genotype and init_cfg.prefix"
            )
        self.body.load_state_dict(loaded, strict=False)
        print_log(
            f"CDARTSBackbone: loaded {len(loaded)}/{len(own)} tensors from {checkpoint}"
            + (f"; missing {len(missing)} (e.g. {missing[0]})" if missing else "")
            + (f"; shape mismatch {len(mismatched)} (e.g. {mismatched[0]})" if mismatched else ""),
            logger="current",
        )
        return {"missing": missing, "mismatched": mismatched}

    # ----- forward ----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.body(x)
        return tuple(feats[i] for i in self.out_indices)


_ACT_VARIANTS: dict[type, type] = {nn.SyncBatchNorm: SyncBatchNormAct}


def _fuses_activation(module: nn.Module) -> bool:
    return isinstance(module, (BatchNormAct2d, *_ACT_VARIANTS.values()))


def _with_activation(norm_class: type) -> type:
    """``norm_class`` followed by its ``drop`` and ``act`` children (timm's SyncBatchNormAct for torch's SyncBN;
    a subclass made here for others, e.g. mmcv's SyncBatchNorm or the ``_BatchNormXd`` mmengine's Runner
    reverts SyncBN layers to when it runs without a process group)."""
    if norm_class not in _ACT_VARIANTS:
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = norm_class.forward(self, x)
            if "drop" in self._modules:
                x = self.drop(x)
            return self.act(x)

        _ACT_VARIANTS[norm_class] = type(norm_class.__name__ + "Act", (norm_class,), {"forward": forward})
    return _ACT_VARIANTS[norm_class]


def _register() -> None:
    # One class, registered where each framework's configs look for it.  Imported lazily so
    # that installing only one of mmdet / mmseg still works.
    registered = False
    for module_name in ("mmdet.registry", "mmseg.registry"):
        try:
            registry = __import__(module_name, fromlist=["MODELS"]).MODELS
        except ImportError:
            continue
        if "CDARTSBackbone" not in registry.module_dict:
            registry.register_module(module=CDARTSBackbone)
        registered = True
    if not registered:
        raise ImportError(
            "CDARTSBackbone needs mmdet or mmsegmentation; run: bash tools/install_mm.sh .venv/bin/python")


_register()
