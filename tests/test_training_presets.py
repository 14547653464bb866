"""The paper's retraining recipes (Sec. 4.3, 4.4, 4.6) as presets: compared with a table written here."""

from __future__ import annotations

import pytest

from cdarts_deploy.training.presets import PRESETS, TrainConfig, preset_config, scaled_lr

# preset: {field: value} as the paper states them (lr is at a global batch of lr_base_batch).
PAPER = {
    "paper-cifar": dict(layout="cifar", width=36, cells=20, epochs=600, batch_size=128, opt="sgd", momentum=0.9,
                        lr=0.025, lr_base_batch=128, sched="cosine", min_lr=0.0, warmup_epochs=0,
                        weight_decay=5e-4, drop_path=0.3, aux_weight=0.4, cutout=16),
    "paper-imagenet": dict(layout="imagenet", width=48, cells=14, epochs=250, opt="sgd", momentum=0.9, lr=0.5,
                           lr_base_batch=1024, sched="cosine", warmup_epochs=5, min_lr=0.0, weight_decay=3e-5,
                           label_smoothing=0.1, aux_weight=0.4),
    "paper-chain": dict(epochs=350, opt="rmsproptf", momentum=0.9, rmsprop_decay=0.9, weight_decay=1e-5,
                        drop_rate=0.2, lr=0.04, lr_base_batch=1024, warmup_epochs=3, sched="cosine",
                        auto_augment="original", model_ema=True, aux_weight=0.0),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets_match_the_paper(name):
    cfg = preset_config(name)
    for key, value in PAPER[name].items():
        assert getattr(cfg, key) == value, f"{name}.{key}"


def test_every_preset_builds_a_config_and_flags_override():
    for name in PRESETS:
        assert isinstance(preset_config(name), TrainConfig)
    cfg = preset_config("paper-cifar", lr=0.1, epochs=None)
    assert cfg.lr == 0.1 and cfg.epochs == 600  # None means "not given"
    with pytest.raises(KeyError, match="unknown preset"):
        preset_config("paper-mnist")
    with pytest.raises(TypeError):
        preset_config("paper-cifar", learning_rate=0.1)


def test_lr_scales_with_the_global_batch():
    cfg = preset_config("paper-imagenet")  # 0.5 at 1024
    assert scaled_lr(cfg, world_size=8) == pytest.approx(0.5)  # 8 x 128
    assert scaled_lr(cfg, world_size=1) == pytest.approx(0.5 / 8)
    assert scaled_lr(preset_config("paper-cifar"), 1) == pytest.approx(0.025)
