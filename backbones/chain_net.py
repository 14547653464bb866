"""Chain-structured MBConv networks (CDARTS-a / CDARTS-b) built with timm.

The blocks come from timm's EfficientNet builder fed with the genotype's arch
strings; the network is timm's :class:`~timm.models.mobilenetv3.MobileNetV3`
(MobileNetV3-style head: global pool, 1x1 conv with bias, activation, linear).
Block details follow the CDARTS reference code: Swish everywhere except
inside squeeze-excite, which uses ReLU and a hard-sigmoid gate and is sized
from the expanded width (``se_from_exp``) rounded to a multiple of 8.

Feature levels (``features_only=True``): timm taps the end of every stage that
is followed by a stride, plus the last stage.  For the CDARTS base
architectures this gives five levels::

    out_index  arch stage  channels  reduction
    0          0           16        2
    1          1           24        4
    2          2           40        8
    3          4           96        16
    4          6           960       32   (320 with last_stage_channels=320)

``out_indices=(1, 2, 3, 4)`` (:data:`DETECTION_OUT_INDICES`) gives exactly the
four detection features: 24, 40, 96, 960 channels at strides
4, 8, 16, 32.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model
from timm.models._builder import pretrained_cfg_for_features
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import decode_arch_def, resolve_act_layer, resolve_bn_args, round_channels
from timm.models._registry import generate_default_cfgs
from timm.models.mobilenetv3 import MobileNetV3, MobileNetV3Features

from cdarts_deploy.genotype import CHAIN_DEFAULTS, ChainGenotype, load

from .factory import create_model_from_genotype, create_registered, register_family

__all__ = [
    "CHAIN_FAMILY",
    "ChainFamily",
    "DETECTION_OUT_INDICES",
    "SEGMENTATION_LAST_STAGE_CHANNELS",
    "chain_pretrained_cfg",
    "create_chain_model",
    "with_last_stage_channels",
]

#: ``out_indices`` selecting the stride 4, 8, 16, 32 features (24, 40, 96, 960 channels).
DETECTION_OUT_INDICES: tuple[int, ...] = (1, 2, 3, 4)
#: Width of the last stage in the segmentation variant (segmentation transfer, paper Sec. 4.6).
SEGMENTATION_LAST_STAGE_CHANNELS = 320

def chain_pretrained_cfg(
    num_classes: int = CHAIN_DEFAULTS["num_classes"], input_size: int = CHAIN_DEFAULTS["input_size"], **overrides: Any
) -> dict:
    """A timm pretrained_cfg for a chain network (no downloadable weights)."""
    stride = 32
    cfg = {
        "url": "",
        "num_classes": num_classes,
        "input_size": (3, input_size, input_size),
        "pool_size": (max(1, input_size // stride), max(1, input_size // stride)),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv_stem",
        "classifier": "classifier",
        "license": "apache-2.0",
    }
    cfg.update(overrides)
    return cfg


def with_last_stage_channels(genotype: ChainGenotype, channels: int) -> ChainGenotype:
    """The genotype with its last stage's final block widened/narrowed to ``channels``.

    With ``channels=320`` this is the segmentation variant (the
    closing 1x1 conv outputs 320 instead of 960 channels).
    """
    if channels < 1:
        raise ValueError(f"last_stage_channels must be a positive integer, got {channels}")
    *head, last = genotype.stages
    last = last[:-1] + (replace(last[-1], out_channels=channels),)
    return replace(genotype, stages=tuple(head) + (last,))


def _model_kwargs(genotype: ChainGenotype, kwargs: dict) -> dict:
    """MobileNetV3 constructor arguments for ``genotype`` (timm's hardcorenas recipe, Swish)."""
    se_layer = partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU, rd_round_fn=round_channels)
    return dict(
        block_args=decode_arch_def(genotype.arch_strings()),
        stem_size=genotype.network.stem_channels,
        fix_stem=True,  # the genotype states the stem width exactly
        norm_layer=kwargs.pop("norm_layer", None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, "swish"),
        se_layer=se_layer,
        se_from_exp=True,
        **kwargs,
    )


class ChainFamily:
    """Chain genotypes as timm MobileNetV3 (the :class:`backbones.factory.ModelFamily` of chains)."""

    genotype_type = ChainGenotype
    registered_args = ("num_classes",)

    def hints_to_kwargs(self, genotype: ChainGenotype, given: dict[str, Any]) -> dict[str, Any]:
        """Classes and input size: explicit, then the genotype's hints, then :data:`CHAIN_DEFAULTS`."""
        wrong = [k for k in ("layout", "width", "cells") if given.get(k) is not None]
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} can only be set for cell (DARTS) genotypes; "
                f"{genotype.name or 'this genotype'} is a chain genotype"
            )
        hints = genotype.network
        return {
            key: next(v for v in (given.get(key), getattr(hints, key), CHAIN_DEFAULTS[key]) if v is not None)
            for key in ("num_classes", "input_size")
        }

    def variant(self, genotype: ChainGenotype, net: dict[str, Any]) -> str:
        return genotype.name or "cdarts_chain"

    def default_cfg(self, variant: str, genotype: ChainGenotype, net: dict[str, Any],
                    given: dict[str, Any]) -> dict[str, Any]:
        # Without an explicit input size the cfg describes the genotype's own network (its hinted
        # classes, as timm's registry entry does), so loading weights saved with those classes
        # into a model with other classes replaces the classifier instead of failing.
        hinted = self.hints_to_kwargs(genotype, {})
        num_classes = net["num_classes"] if given.get("input_size") is not None else hinted["num_classes"]
        return chain_pretrained_cfg(num_classes=num_classes, input_size=net["input_size"], architecture=variant)

    def build(self, variant: str, genotype: ChainGenotype, net: dict[str, Any], pretrained: bool,
              kwargs: dict[str, Any]) -> nn.Module:
        """MobileNetV3 through ``build_model_with_cfg`` (mirrors timm's ``_create_mnv3``)."""
        kwargs.setdefault("num_classes", net["num_classes"])
        last_channels = kwargs.pop("last_stage_channels", None)
        if last_channels is not None:
            genotype = with_last_stage_channels(genotype, last_channels)
        kwargs.setdefault("num_features", genotype.network.head_channels)
        kwargs.setdefault("head_bias", True)
        model_kwargs = _model_kwargs(genotype, kwargs)

        features_mode = ""
        model_cls: type[nn.Module] = MobileNetV3
        kwargs_filter = None
        if model_kwargs.pop("features_only", False):
            if "feature_cfg" in model_kwargs or "feature_cls" in model_kwargs:
                features_mode = "cfg"  # timm's generic wrappers (hook, fx, getter, ...)
            else:
                kwargs_filter = ("num_classes", "num_features", "head_conv", "head_bias", "head_norm", "global_pool")
                model_cls = MobileNetV3Features
                features_mode = "cls"
        model = build_model_with_cfg(
            model_cls,
            variant,
            pretrained,
            features_only=features_mode == "cfg",
            pretrained_strict=features_mode != "cls",
            kwargs_filter=kwargs_filter,
            **model_kwargs,
        )
        if features_mode == "cls":
            model.default_cfg = model.pretrained_cfg = pretrained_cfg_for_features(model.default_cfg)
        return model


CHAIN_FAMILY = register_family(ChainFamily())


def create_chain_model(genotype: ChainGenotype, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a chain genotype as a timm MobileNetV3 model (:func:`backbones.factory.create_model_from_genotype`).

    Accepts timm's usual keyword arguments: ``num_classes``, ``drop_rate``,
    ``drop_path_rate``, ``features_only`` / ``out_indices`` / ``feature_cls``,
    ``pretrained_cfg_overlay=dict(file=PATH)`` (with ``pretrained=True``) for a
    local checkpoint, plus ``last_stage_channels`` (e.g. 320 for the
    segmentation variant).  The genotype's network hints set the default
    number of classes and input size of the pretrained_cfg.
    """
    if not isinstance(genotype, ChainGenotype):
        raise TypeError(f"create_chain_model needs a chain genotype, got {type(genotype).__name__}")
    return create_model_from_genotype(genotype, pretrained=pretrained, **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "cdarts_a": chain_pretrained_cfg(),
        "cdarts_b": chain_pretrained_cfg(),
    }
)


@register_model
def cdarts_a(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """CDARTS-a (ImageNet, chain-structured MBConv space; paper: 7.0M params, 294M MAdds)."""
    return create_registered("cdarts_a", load("cdarts_a"), pretrained, kwargs)


@register_model
def cdarts_b(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    """CDARTS-b (ImageNet, chain-structured MBConv space; paper: 6.4M params, 394M MAdds)."""
    return create_registered("cdarts_b", load("cdarts_b"), pretrained, kwargs)
