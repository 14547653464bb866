"""The repair of the published TensorRT stubs before mypy reads them (the type check itself needs the stubs from
PyPI: ``python -m tools.trt_typecheck``)."""

from __future__ import annotations

import ast

import pytest

from tools import trt_typecheck as tt

BROKEN = [
    "    def configure_plugin(self: IPluginV3, in: list[Desc], out: list[Desc]) -> None:",
    "    def add_scale_nd(self, input: ITensor, shift: Weights = None, scale: Weights = None, channel_axis: int)"
    " -> IScaleLayer:",
]


@pytest.mark.parametrize("line", BROKEN)
def test_broken_stub_lines_are_repaired(line):
    with pytest.raises(SyntaxError):
        ast.parse(line.strip() + "\n    ...")
    fixed = tt.repair_line(line)
    ast.parse(fixed.strip() + "\n    ...")
    assert fixed.startswith("    def ") and fixed.endswith(":")


def test_repair_keeps_valid_lines_and_checks_the_whole_file(tmp_path):
    stub = tmp_path / "t.pyi"
    good = "class A:\n    def f(self, x: int = 1, *, y: dict[str, int]) -> None: ...\n"
    stub.write_text(good + "".join(f"class B{i}:\n{line} ...\n" for i, line in enumerate(BROKEN)))
    assert tt.repair(stub) == 2
    text = stub.read_text()
    assert text.startswith(good) and "in_: list[Desc]" in text and "channel_axis: int = ..." in text
    assert tt.repair(stub) == 0  # idempotent
