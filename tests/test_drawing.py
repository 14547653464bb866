"""Cell diagrams and chain strips: files, content of the SVG text, layout order, labels that hide nothing."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from cdarts_deploy import genotype as gt
from cdarts_deploy.drawing import cells, plot_genotype
from cdarts_deploy.drawing.figures import pyplot


def svg_texts(path) -> list[str]:
    """Text elements of a matplotlib SVG written with svg.fonttype 'none'."""
    return [t.strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text(encoding="utf-8"))]


def assert_real_png(path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert min(pixels.shape) > 100
    assert pixels.std() > 5, "picture is blank"


def test_cell_genotype_gives_one_png_and_svg_per_distinct_cell(tmp_path):
    g = gt.load("cdarts_cifar")
    files = plot_genotype(g, tmp_path)
    names = sorted(p.name for p in files)
    assert names == ["cdarts_cifar_normal.png", "cdarts_cifar_normal.svg", "cdarts_cifar_reduce.png",
                     "cdarts_cifar_reduce.svg"]
    # only the published files are left: temporary files were renamed away
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    for p in files:
        if p.suffix == ".png":
            assert_real_png(p)


@pytest.mark.parametrize("zoo_name", ["darts_v2", "pdarts", "cdarts_imagenet"])
def test_every_edge_is_labelled_with_its_operation(tmp_path, zoo_name):
    g = gt.load(zoo_name)
    for kind in ("normal", "reduce"):
        cell = getattr(g.stages[0], kind)
        (svg,) = cells.plot_cell(cell, tmp_path / kind, formats=("svg",))
        texts = Counter(svg_texts(svg))
        expected = Counter(op for node in cell.nodes for op, _ in node)
        assert {op: texts[op] for op in expected} == dict(expected)
        # every intermediate node is drawn and named 0, 1, ... as in the DARTS plots
        for node in range(len(cell.nodes)):
            assert texts[str(node)] == 1


def test_per_stage_genotype_draws_each_distinct_cell_once(tmp_path):
    base = gt.load("darts_v2")
    other = gt.load("pdarts").stages[0]
    g = replace(base, stages=(base.stages[0], base.stages[0], other), name="mixed")
    files = plot_genotype(g, tmp_path, formats=("png",))
    assert sorted(p.name for p in files) == [
        "mixed_stage0_normal.png", "mixed_stage0_reduce.png", "mixed_stage2_normal.png", "mixed_stage2_reduce.png"
    ]


def test_node_depths_follow_the_longest_path():
    # darts_v2 normal: nodes 2, 3, 4 read only the cell inputs; node 5 reads node 2
    cell = gt.load("darts_v2").stages[0].normal
    assert cells.node_depths(cell) == {0: 0, 1: 0, 2: 1, 3: 1, 4: 1, 5: 2}
    # pdarts normal: node 4 reads node 3, node 5 reads node 4
    cell = gt.load("pdarts").stages[0].normal
    assert cells.node_depths(cell) == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 3}
    pos = cells.cell_layout(cell)
    assert pos[0][0] < pos[2][0] < pos[4][0] < pos[5][0] < pos["out"][0]


@pytest.mark.parametrize("zoo_name", ["darts_v2", "pdarts", "cdarts_cifar"])
def test_nodes_run_left_to_right_in_node_order(zoo_name):
    cell = gt.load(zoo_name).stages[0].normal
    pos = cells.cell_layout(cell)
    order = [0, *range(2, 2 + len(cell.nodes)), "out"]
    xs = [pos[n][0] for n in order]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    assert pos[0][0] == pos[1][0] and pos[0][1] > pos[1][1]  # c_{k-2} above c_{k-1}, both at the left


def _boxes(artists):
    return [a.get_bbox_patch().get_window_extent() for a in artists]


def _overlap(a, b) -> bool:
    return min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0)


CELL_ZOO = [name for name in gt.zoo_names() if isinstance(gt.load(name), gt.CellGenotype)]


@pytest.mark.parametrize("zoo_name", CELL_ZOO)
def test_edge_labels_touch_no_node_and_no_other_label(zoo_name):
    g = gt.load(zoo_name)
    for _, cell in cells.distinct_cells(g):
        fig, drawing = cells.cell_figure(cell, "title")
        try:
            fig.canvas.draw()
            labels, nodes = _boxes(drawing.labels), _boxes(drawing.nodes.values())
            assert len(labels) == sum(len(n) for n in cell.nodes)
            frame = fig.bbox
            for i, box in enumerate(labels):
                assert not any(_overlap(box, node) for node in nodes), (zoo_name, cell.nodes[i // 2])
                assert not any(_overlap(box, other) for other in labels[i + 1:]), (zoo_name, i)
                assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        finally:
            pyplot().close(fig)


def test_search_sheet_draws_every_stage_in_one_png(tmp_path):
    base = gt.load("darts_v2")
    g = replace(base, stages=(base.stages[0], gt.load("pdarts").stages[0], base.stages[0]))
    path = cells.draw_genotype(g, tmp_path / "cells.png")
    assert path == tmp_path / "cells.png" and sorted(p.name for p in tmp_path.iterdir()) == ["cells.png"]
    assert_real_png(path)
    with Image.open(path) as img:
        assert img.height > img.width / 2  # three stage rows


@pytest.mark.parametrize("zoo_name", ["cdarts_a", "cdarts_b"])
def test_chain_strip_shows_every_block_with_kernel_and_expansion(tmp_path, zoo_name):
    g = gt.load(zoo_name)
    files = plot_genotype(g, tmp_path)
    assert sorted(p.name for p in files) == [f"{zoo_name}_chain.png", f"{zoo_name}_chain.svg"]
    assert_real_png(files[0])
    texts = svg_texts(files[1])
    blocks = [b for stage in g.stages for b in stage for _ in range(b.repeats)]
    labels = [t for t in texts if t.startswith(("MB k", "ds k", "conv"))]
    assert len(labels) == len(blocks)
    for kernel in (3, 5, 7):
        want = sum(1 for b in blocks if b.kernel == kernel and b.type != "cn")
        assert sum(1 for t in labels if t.startswith(("MB", "ds")) and f"k{kernel}" in t) == want
    exp6 = sum(1 for b in blocks if b.type == "ir" and b.expansion == 6)
    assert sum(1 for t in texts if t == "e6") == exp6
    assert sum(1 for t in texts if t.startswith("stage ")) == len(g.stages)


def test_stem_without_folder_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError):
        plot_genotype(gt.load("darts_v1"), tmp_path / "missing")
