"""CDARTSBackbone in MMDetection / MMSegmentation: registries, levels, freezing, pretrained loading."""

from __future__ import annotations

import pickle

import pytest
import torch

from backbones.checkpoint_io import CheckpointError
from backbones.factory import create_model_from_genotype
from downstream.mm_backbone import CDARTSBackbone, read_state_dict

# Tiny DARTS-cell network in the ImageNet layout (levels at strides 4, 8, 16, 32).
TINY_CELL = dict(layout="imagenet", width=8, cells=5)


def _build(registry_module: str, **cfg):
    import importlib

    registry = importlib.import_module(registry_module).MODELS
    return registry.build(dict(type="CDARTSBackbone", **cfg))


@pytest.mark.parametrize("registry", ["mmdet.registry", "mmseg.registry"])
def test_registered_in_both_frameworks(registry):
    backbone = _build(registry, genotype="cdarts_a", out_indices=(1, 2, 3, 4))
    assert isinstance(backbone, CDARTSBackbone)


@pytest.mark.parametrize("name", ["cdarts_a", "cdarts_b"])
def test_chain_detection_levels_match_the_paper(name):
    # Detection levels: features after stages 1, 2, 4, 6: 24, 40, 96, 960 channels at strides 4..32.
    backbone = _build("mmdet.registry", genotype=name, out_indices=(1, 2, 3, 4)).eval()
    assert backbone.out_channels == [24, 40, 96, 960]
    assert backbone.out_strides == [4, 8, 16, 32]
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == [24, 40, 96, 960]
    assert [tuple(f.shape[2:]) for f in feats] == [(64 // s, 96 // s) for s in (4, 8, 16, 32)]


def test_segmentation_variant_has_320_channel_last_stage():
    backbone = _build("mmseg.registry", genotype="cdarts_b", out_indices=(1, 2, 3, 4), last_stage_channels=320).eval()
    assert backbone.out_channels == [24, 40, 96, 320]
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 64, 64))[-1].shape == (1, 320, 2, 2)


def test_cell_backbone_levels_and_partial_build():
    backbone = CDARTSBackbone("cdarts_imagenet", model_kwargs=TINY_CELL).eval()
    assert backbone.out_strides == [4, 8, 16, 32]
    # ImageNet layout: stem0 has C channels, then 4C, 8C, 16C from the cells of the three stages.
    assert backbone.out_channels == [8, 32, 64, 128]
    partial = CDARTSBackbone("cdarts_imagenet", out_indices=(0, 1), model_kwargs=TINY_CELL).eval()
    with torch.no_grad():
        full_feats = backbone(torch.randn(2, 3, 64, 64))
        feats = partial(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [tuple(f.shape) for f in full_feats[:2]]
    # Only the levels up to the deepest requested one are built: no unused parameters for DDP.
    assert sum(p.numel() for p in partial.parameters()) < sum(p.numel() for p in backbone.parameters())


def test_bad_out_indices_name_the_available_levels():
    with pytest.raises(ValueError, match="feature levels 0..4"):
        CDARTSBackbone("cdarts_b", out_indices=(1, 7))
    with pytest.raises(ValueError, match="chain genotypes"):
        CDARTSBackbone("cdarts_imagenet", last_stage_channels=320, model_kwargs=TINY_CELL)


def _sgd_step(backbone: CDARTSBackbone) -> None:
    backbone.train()
    opt = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    loss = sum(f.mean() for f in backbone(torch.randn(2, 3, 64, 64)))
    loss.backward()
    opt.step()


@pytest.mark.parametrize("genotype,kwargs", [("cdarts_b", {}), ("cdarts_imagenet", TINY_CELL)])
def test_frozen_stages_freeze_exactly_what_feeds_the_level(genotype, kwargs):
    torch.manual_seed(0)
    backbone = CDARTSBackbone(genotype, frozen_stages=1, model_kwargs=kwargs)
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen, "frozen_stages=1 froze nothing"
    # Everything computing level 1 is frozen; the deeper stages are not.
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable
    frozen_bns = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d) and not m.weight.requires_grad]
    assert frozen_bns
    before = {n: t.clone() for n, t in backbone.state_dict().items()}
    _sgd_step(backbone)
    after = backbone.state_dict()
    frozen_bn_buffers = {
        f"{name}.{b}" for name, m in backbone.named_modules() if m in frozen_bns
        for b in ("running_mean", "running_var")
    }
    for name in frozen | frozen_bn_buffers:
        assert torch.equal(before[name], after[name]), f"{name} changed although frozen"
    changed = [n for n in trainable if not torch.equal(before[n], after[n])]
    assert len(changed) > len(trainable) // 2
    # Level 1 no longer depends on any trainable parameter; level 2 does.
    feats = backbone.body(torch.randn(1, 3, 64, 64))
    assert not feats[1].requires_grad and feats[2].requires_grad


def test_frozen_stages_level_zero_is_the_stem_only_for_chain():
    backbone = CDARTSBackbone("cdarts_b", frozen_stages=0)
    frozen = {n.split(".")[1] for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen <= {"conv_stem", "bn1", "blocks"}
    assert all(
        n.startswith(("body.conv_stem", "body.bn1", "body.blocks.0."))
        for n, p in backbone.named_parameters() if not p.requires_grad
    )


def test_norm_eval_keeps_batchnorm_statistics():
    backbone = CDARTSBackbone("cdarts_a", norm_eval=True)
    backbone.train()
    assert all(not m.training for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = {n: t.clone() for n, t in backbone.state_dict().items() if "running" in n}
    backbone(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(before[n], t) for n, t in backbone.state_dict().items() if "running" in n)


@pytest.mark.parametrize("genotype,kwargs", [("cdarts_a", {}), ("cdarts_imagenet", TINY_CELL)])
def test_init_cfg_loads_timm_classification_checkpoint(tmp_path, genotype, kwargs):
    torch.manual_seed(1)
    classifier = create_model_from_genotype(genotype, **kwargs)
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": classifier.state_dict()}, path)
    backbone = CDARTSBackbone(genotype, model_kwargs=kwargs, init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    backbone.init_weights()
    classifier.eval()
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        # The deepest feature of the backbone equals the classifier's pre-pool features.
        expected = classifier.forward_features(x)
        got = backbone(x)[-1]
    torch.testing.assert_close(got, expected)


def test_init_cfg_prefix_and_shape_mismatch(tmp_path):
    torch.manual_seed(2)
    source = CDARTSBackbone("cdarts_b", out_indices=(1, 2, 3, 4))
    path = tmp_path / "detector.pth"
    # A whole detector's checkpoint: backbone weights live under 'backbone.'.
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["neck.lateral.weight"] = torch.zeros(1)
    torch.save({"meta": {"epoch": 3}, "state_dict": state}, path)

    target = CDARTSBackbone(
        "cdarts_b", out_indices=(1, 2, 3, 4), last_stage_channels=320,
        init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."),
    )
    target.init_weights()
    src, dst = source.state_dict(), target.state_dict()
    same_shape = [k for k in dst if src[k].shape == dst[k].shape]
    assert all(torch.equal(src[k], dst[k]) for k in same_shape)
    # Only the 320-channel last conv (and its BN) differ in shape, and they were skipped.
    assert 0 < len(dst) - len(same_shape) <= 6

    with pytest.raises(CheckpointError, match="prefix"):
        CDARTSBackbone("cdarts_b",
                       init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="teacher.")).init_weights()
    with pytest.raises(CheckpointError, match="shares no weights"):
        CDARTSBackbone("cdarts_imagenet", model_kwargs=TINY_CELL,
                       init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone.")).init_weights()


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_checkpoint_reading_never_unpickles_objects(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": {"w": torch.zeros(1)}, "x": _Payload()}, fh)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")


def test_sync_bn_conversions_keep_eval_outputs():
    """timm's BatchNormAct2d fuses the activation into the norm layer (66 of the 67 norm layers of
    CDARTS-b); every SyncBN path must keep it.  SyncBatchNorm in eval mode needs no process group."""
    import copy

    from mmengine.model.utils import convert_sync_batchnorm as mmengine_convert
    from mmengine.model.utils import revert_sync_batchnorm
    from timm.layers import SyncBatchNormAct

    torch.manual_seed(0)
    backbone = CDARTSBackbone("cdarts_b", out_indices=(1, 2, 3, 4), frozen_stages=1)
    backbone.train()
    with torch.no_grad():
        backbone(torch.randn(2, 3, 64, 64))  # running statistics that differ from the initial ones
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = backbone(x)

    def outputs(model):
        model.eval()
        with torch.no_grad():
            return model(x)

    own = copy.deepcopy(backbone).convert_sync_batchnorm()  # what sync_bn=True does at construction
    assert sum(isinstance(m, SyncBatchNormAct) for m in own.modules()) == 66
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in own.modules()) == 67
    # mmengine's cfg.sync_bn='torch' path and torch's own converter drop the activation ...
    plain = [mmengine_convert(copy.deepcopy(backbone), "torch"),
             torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(backbone))]
    assert all(not any(isinstance(m, SyncBatchNormAct) for m in p.modules()) for p in plain)
    # mmengine's Runner without a process group reverts SyncBN to _BatchNormXd, dropping it again.
    reverted = revert_sync_batchnorm(copy.deepcopy(own))
    for model in [own, *plain, reverted]:
        got = outputs(model)  # ... and eval() (as the Runner's loops call it) gives it back
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert len(norms) == 67 and sum(type(m).__name__.endswith("Act") for m in norms) == 66
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # Frozen stages keep their statistics after the conversion too (the modules were replaced).
    own.train()
    frozen_norms = [m for n, m in own.body.named_modules() if isinstance(m, torch.nn.SyncBatchNorm)
                    and not m.weight.requires_grad]
    assert frozen_norms and all(not m.training for m in frozen_norms)
    # The sync_bn=True config option is checked on the segmentation configs (test_downstream_configs.py).
