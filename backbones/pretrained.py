"""Input normalisation shared by the registered backbones.

* :data:`CIFAR_MEAN` / :data:`CIFAR_STD`: per-channel statistics of the CIFAR-10 training images
  (the ImageNet ones are timm's ``IMAGENET_DEFAULT_MEAN`` / ``IMAGENET_DEFAULT_STD``).

No weights are published for these models: ``pretrained=True`` needs a local file
(``pretrained_cfg_overlay=dict(file=PATH)``), read on the one genotype-to-module path in
:mod:`backbones.factory` through :mod:`backbones.checkpoint_io`.
"""

from __future__ import annotations

__all__ = ["CIFAR_MEAN", "CIFAR_STD"]

CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)
