"""The genotype-to-module path is one straight line through the resolver (backbones.factory).

A call tracer records which ``backbones`` modules a build passes through.  The resolver calls every
step (family hints, pretrained cfg, checkpoint reading, the family's build) and control returns to the
resolver only -- no module hands the build on to another and gets it back -- so the order stays in one
place.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace

import pytest
import timm
import torch

import backbones  # noqa: F401  (registers the models and families)
from backbones.factory import create_model_from_genotype
from cdarts_deploy.genotype import load

RESOLVER = "factory"
#: Modules that define the networks themselves (what a family's build constructs), not the path.
NETWORK_DEFINITION = {"darts_net", "darts_ops", "darts_stem", "depthwise_conv", "onednn_guard"}


def module_path(fn: Callable[[], object]) -> list[str]:
    """The ``backbones`` modules ``fn`` passes through, consecutive repeats merged (``<network>``: a network class)."""
    seq: list[str] = []

    def note(frame) -> None:
        name = frame.f_globals.get("__name__", "") if frame is not None else ""
        if not name.startswith("backbones."):
            return
        name = name.removeprefix("backbones.")
        name = "<network>" if name in NETWORK_DEFINITION else name
        if not seq or seq[-1] != name:
            seq.append(name)

    def profile(frame, event, arg) -> None:
        if event == "call":
            note(frame)
        elif event == "return":
            note(frame.f_back)  # control goes back to the caller

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(previous)
    return seq


def bounces(seq: list[str]) -> list[str]:
    """Steps between two path modules that bypass the resolver.

    On a straight path the resolver calls each step (a family's hints, its cfg, the checkpoint reader,
    the family's build) and control comes back to the resolver only, so every step starts or ends
    there.  The network classes a build constructs are below the path and left out.
    """
    path = [m for m in seq if m != "<network>"]
    path = [m for i, m in enumerate(path) if i == 0 or path[i - 1] != m]
    return [f"{a} -> {b}" for a, b in zip(path, path[1:]) if RESOLVER not in (a, b)]


@pytest.fixture(scope="module")
def chain_weights(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("w") / "cdarts_b.pth"
    torch.save(create_model_from_genotype("cdarts_b").state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def cell_weights(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("w") / "pdarts.pth"
    torch.save({"state_dict": create_model_from_genotype("pdarts", width=4, cells=5).state_dict()}, path)
    return str(path)


def test_bounces_are_detected() -> None:
    # a path without one resolver: the family calls the weight reader, which calls the checkpoint reader
    old = ["factory", "chain_net", "pretrained", "checkpoint_io", "pretrained", "chain_net", "factory"]
    assert bounces(old) == ["chain_net -> pretrained", "pretrained -> checkpoint_io", "checkpoint_io -> pretrained",
                            "pretrained -> chain_net"]
    straight = ["factory", "darts_models", "factory", "checkpoint_io", "factory", "darts_models", "<network>",
                "darts_models", "factory"]
    assert bounces(straight) == []


@pytest.mark.parametrize("pretrained", [False, True], ids=["random", "checkpoint"])
def test_chain_genotype_path_is_straight(pretrained: bool, chain_weights: str) -> None:
    kwargs = dict(pretrained=True, pretrained_cfg_overlay=dict(file=chain_weights)) if pretrained else {}
    seq = module_path(lambda: create_model_from_genotype(load("cdarts_b"), num_classes=7, **kwargs))
    assert seq[0] == seq[-1] == RESOLVER, seq
    assert bounces(seq) == [], seq
    assert set(seq) == {RESOLVER, "chain_net"} | ({"checkpoint_io"} if pretrained else set()), seq


@pytest.mark.parametrize("pretrained", [False, True], ids=["random", "checkpoint"])
def test_cell_genotype_path_is_straight(pretrained: bool, cell_weights: str) -> None:
    kwargs = dict(pretrained=True, pretrained_cfg_overlay=dict(file=cell_weights)) if pretrained else {}
    seq = module_path(lambda: create_model_from_genotype(load("pdarts"), width=4, cells=5, **kwargs))
    assert seq[0] == seq[-1] == RESOLVER, seq
    assert bounces(seq) == [], seq
    assert set(seq) == {RESOLVER, "darts_models", "<network>"} | ({"checkpoint_io"} if pretrained else set()), seq
    # weights are read before the network is built (timm applies them inside the build)
    if pretrained:
        assert seq.index("checkpoint_io") < seq.index("<network>"), seq


def test_timm_registration_enters_the_same_path(chain_weights: str) -> None:
    overlay = dict(file=chain_weights, num_classes=1000)
    seq = module_path(
        lambda: timm.create_model("cdarts_b", pretrained=True, num_classes=5, pretrained_cfg_overlay=overlay))
    # the registered function (in its family's module) is the entry; inside, only the resolver is returned to
    assert seq[0] == seq[-1] == "chain_net", seq
    assert bounces(seq[1:-1]) == [], seq
    assert "checkpoint_io" in seq


def test_families_and_network_resolution() -> None:
    from backbones.factory import family_of, resolve_network

    assert type(family_of(load("cdarts_b"))).__name__ == "ChainFamily"
    assert type(family_of(load("darts_v2"))).__name__ == "CellFamily"
    assert resolve_network("cdarts_b") == dict(num_classes=1000, input_size=224)
    hinted = replace(load("cdarts_b"), network=replace(load("cdarts_b").network, num_classes=10, input_size=96))
    assert resolve_network(hinted, num_classes=3) == dict(num_classes=3, input_size=96)
    with pytest.raises(ValueError, match="chain genotype"):
        resolve_network("cdarts_b", cells=4)
    assert resolve_network("darts_v2", layout="imagenet")["width"] == 48
    with pytest.raises(TypeError):
        family_of(object())  # type: ignore[arg-type]
