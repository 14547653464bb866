"""DartsCell and DartsNet: cell wiring, layouts, stages and the state_dict layout checkpoints rely on.

Expected channels, strides and stage splits follow the DARTS evaluation-network definition (written
out here), never read back from the model under test.
"""

import pytest
import torch

from backbones.darts_net import DartsCell, DartsNet, stage_of_cell
from backbones.darts_ops import OPERATIONS, FactorizedReduce
from cdarts_deploy.genotype import Cell, CellGenotype, CellStage, GenotypeError, load


def test_layouts_channels_and_reductions():
    c = 4
    cifar = DartsNet(load("darts_v2"), layout="cifar", width=c, cells=8, num_classes=3)
    # reductions at 8 // 3 = 2 and 2 * 8 // 3 = 5; channels double at each
    assert [cell.reduction for cell in cifar.cells] == [False, False, True, False, False, True, False, False]
    assert [cell.channels for cell in cifar.cells] == [c, c, 2 * c, 2 * c, 2 * c, 4 * c, 4 * c, 4 * c]
    assert cifar.stem[0].out_channels == 3 * c
    assert cifar.num_features == 16 * c
    # a cell after a reduction cell reduces its input 0 with FactorizedReduce
    assert [isinstance(cell.preprocess0, FactorizedReduce) for cell in cifar.cells] == [
        False, False, False, True, False, False, True, False
    ]
    imagenet = DartsNet(load("darts_v2"), layout="imagenet", width=c, cells=8, num_classes=3)
    assert isinstance(imagenet.cells[0].preprocess0, FactorizedReduce)  # fed by stem0 at 1/4
    assert imagenet.stem0[0].out_channels == c // 2 and imagenet.stem1[1].stride == (2, 2)
    assert imagenet.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 16 * c, 2, 2)
    assert cifar.forward_features(torch.randn(1, 3, 16, 16)).shape == (1, 16 * c, 4, 4)


def test_stage_split():
    assert [sum(stage_of_cell(i, 20) == s for i in range(20)) for s in range(3)] == [7, 7, 6]
    assert [sum(stage_of_cell(i, 14) == s for i in range(14)) for s in range(3)] == [5, 5, 4]


def _uniform_cell(op: str) -> Cell:
    return Cell(nodes=(((op, 0), (op, 1)), ((op, 1), (op, 2)), ((op, 0), (op, 3)), ((op, 2), (op, 4))),
                concat=(2, 3, 4, 5))


def test_different_cell_per_stage():
    ops = ("sep_conv_3x3", "dil_conv_5x5", "avg_pool_3x3")
    reduce_ops = ("max_pool_3x3", "sep_conv_5x5", "dil_conv_3x3")
    g = CellGenotype(
        stages=tuple(CellStage(normal=_uniform_cell(n), reduce=_uniform_cell(r)) for n, r in zip(ops, reduce_ops))
    )
    model = DartsNet(g, layout="cifar", width=4, cells=8, num_classes=3)
    # stage 0 = cells 0..2 (cell 2 reduces), stage 1 = cells 3..5 (cell 5 reduces), stage 2 = cells 6..7
    expected = ["sep_conv_3x3", "sep_conv_3x3", "max_pool_3x3", "dil_conv_5x5", "dil_conv_5x5", "sep_conv_5x5",
                "avg_pool_3x3", "avg_pool_3x3"]
    assert [{op for _, _, op in cell.edges} for cell in model.cells] == [{e} for e in expected]
    model(torch.randn(2, 3, 8, 8)).sum().backward()

    two_stages = CellGenotype(stages=g.stages[:2])
    with pytest.raises(GenotypeError, match="2 stages"):
        DartsNet(two_stages, width=4, cells=8)


def test_cell_edges_address_ops():
    cell_def = load("cdarts_cifar").stages[0].reduce
    cell = DartsCell(cell_def, 24, 24, 8, reduction=True, reduction_prev=False)
    expected = [(i + 2, src, op) for i, node in enumerate(cell_def.nodes) for op, src in node]
    assert cell.edges == expected
    for (node, src, op_name), op in zip(cell.edges, cell.ops):
        stride = 2 if src < 2 else 1
        # same structure as a fresh operation, so search code can copy state_dicts in and out
        fresh = OPERATIONS[op_name](8, stride, True)
        assert type(op) is type(fresh)
        assert {k: v.shape for k, v in op.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
        op.load_state_dict(fresh.state_dict())
    assert cell(torch.randn(1, 24, 8, 8), torch.randn(1, 24, 8, 8)).shape == (1, 32, 4, 4)


def test_identity_edges_are_never_dropped():
    skip = Cell(nodes=((("skip_connect", 0), ("skip_connect", 1)),), concat=(2,))
    cell = DartsCell(skip, 4, 4, 4, reduction=False, reduction_prev=False).train()
    cell.drop_prob = 0.9
    s0, s1 = torch.randn(8, 4, 5, 5), torch.randn(8, 4, 5, 5)
    torch.manual_seed(0)
    dropped = cell(s0, s1)
    cell.drop_prob = 0.0
    assert torch.allclose(dropped, cell(s0, s1))


def test_state_dict_keys_keep_their_layout():
    # checkpoints saved from these networks must keep loading: stems by layout, ops by edge index
    cifar = DartsNet(load("darts_v2"), layout="cifar", width=4, cells=5, num_classes=3).state_dict()
    assert "stem.0.weight" in cifar and "stem.1.running_mean" in cifar
    assert not [k for k in cifar if k.startswith(("stem0.", "stem1."))]
    assert "cells.0.ops.0.0.1.weight" in cifar and "cells.2.preprocess0.conv_1.weight" in cifar
    imagenet = DartsNet(load("darts_v2"), layout="imagenet", width=4, cells=5, num_classes=3).state_dict()
    assert "stem0.0.weight" in imagenet and "stem1.1.weight" in imagenet
    assert not [k for k in imagenet if k.startswith("stem.")]


def test_layout_defaults_fill_unset_sizes():
    net = DartsNet(load("darts_v2"), layout="imagenet")
    assert (net.width, net.num_cells, net.num_classes) == (48, 14, 1000)


def test_cell_scripts_with_drop_path():
    cell_def = load("cdarts_cifar").stages[0].normal
    cell = DartsCell(cell_def, 8, 8, 4, reduction=False, reduction_prev=False)
    cell.drop_prob = 0.5
    scripted = torch.jit.script(cell)
    s0, s1 = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    cell.eval(), scripted.eval()
    with torch.no_grad():
        assert torch.allclose(scripted(s0, s1), cell(s0, s1), atol=1e-6)
    scripted.train()
    torch.manual_seed(0)
    assert scripted(s0, s1).shape == (2, 4 * len(cell_def.concat), 5, 5)


@pytest.mark.parametrize("auxiliary", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(auxiliary):
    torch.manual_seed(0)
    net = DartsNet(load("darts_v2"), layout="cifar", width=4, cells=5, num_classes=3, auxiliary=auxiliary).train()
    x = torch.randn(2, 3, 16, 16)
    grads = []
    for enable in (False, True):
        net.set_grad_checkpointing(enable)
        net.zero_grad(set_to_none=True)
        out = net(x)
        (out[0] + out[1] if auxiliary else out).sum().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
    for n, g in grads[0].items():
        assert torch.allclose(grads[1][n], g, atol=1e-5), n
