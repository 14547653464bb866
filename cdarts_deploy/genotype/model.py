"""The in-memory genotype: frozen dataclasses that compare with ``==`` and print readably.

Three kinds share the fields ``network`` (hints for building the network), ``name`` and ``description``:

* :class:`CellGenotype` -- DARTS cell space: per stage a normal and a reduction :class:`Cell`.
* :class:`ChainGenotype` -- chain-structured MBConv space: stages of :class:`Block` s (from
  :mod:`~cdarts_deploy.genotype.blocks`), each one timm arch string.
* :class:`Nb201Genotype` -- NAS-Bench-201 space: one cell of 4 nodes, one operation per edge.

Construction does not validate; :func:`cdarts_deploy.genotype.from_dict` and the parsers do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Union

from cdarts_deploy.genotype.blocks import Block, parse_arch_string, validate_stages
from cdarts_deploy.genotype.errors import GenotypeError

#: One edge into a cell node: (operation, index of the input node).
Edge = tuple[str, int]


@dataclass(frozen=True)
class Cell:
    """A DARTS cell: ``nodes[i]`` lists the edges into node ``i + 2`` (nodes 0 and 1 are the cell inputs)."""

    nodes: tuple[tuple[Edge, ...], ...]
    concat: tuple[int, ...]

    def __str__(self) -> str:
        parts = []
        for i, edges in enumerate(self.nodes):
            parts.append(f"n{i + 2}=" + "+".join(f"{op}({src})" for op, src in edges))
        return " ".join(parts) + f" concat={list(self.concat)}"


@dataclass(frozen=True)
class CellStage:
    normal: Cell
    reduce: Cell


@dataclass(frozen=True)
class CellNetwork:
    """Optional hints that let a genotype export without extra flags."""

    layout: str | None = None
    width: int | None = None
    cells: int | None = None
    num_classes: int | None = None
    input_size: int | None = None


@dataclass(frozen=True)
class CellGenotype:
    stages: tuple[CellStage, ...]
    network: CellNetwork = field(default_factory=CellNetwork)
    name: str | None = None
    description: str | None = None
    kind: str = field(default="cell", init=False)

    def stage(self, index: int, num_stages: int = 3) -> CellStage:
        """The cells used in network stage ``index`` (one stage means shared)."""
        if len(self.stages) == 1:
            return self.stages[0]
        if len(self.stages) != num_stages:
            raise GenotypeError(
                f"genotype has {len(self.stages)} stages but the network has {num_stages}; "
                f"give 1 stage (shared) or {num_stages}",
                "stages",
                self.name or "<genotype>",
            )
        return self.stages[index]

    def __str__(self) -> str:
        lines = [f"cell genotype {self.name or ''}".rstrip()]
        for i, st in enumerate(self.stages):
            lines.append(f"  stage {i} normal: {st.normal}")
            lines.append(f"  stage {i} reduce: {st.reduce}")
        hints = {k: v for k, v in self.network.__dict__.items() if v is not None}
        if hints:
            lines.append(f"  network: {hints}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ChainNetwork:
    num_classes: int | None = None
    input_size: int | None = None
    stem_channels: int = 16
    head_channels: int = 1280


@dataclass(frozen=True)
class ChainGenotype:
    stages: tuple[tuple[Block, ...], ...]
    network: ChainNetwork = field(default_factory=ChainNetwork)
    name: str | None = None
    description: str | None = None
    kind: str = field(default="chain", init=False)

    def arch_strings(self) -> list[list[str]]:
        """The timm EfficientNet-builder arch definition."""
        return [[b.to_arch_string() for b in stage] for stage in self.stages]

    @classmethod
    def from_arch_strings(
        cls,
        arch: Iterable[Iterable[str]],
        name: str | None = None,
        network: ChainNetwork | None = None,
        source: str = "<arch>",
    ) -> "ChainGenotype":
        """Parse and validate a timm arch definition (a list of stages of arch strings)."""
        stages = tuple(
            tuple(parse_arch_string(s, f"arch[{i}][{j}]", source) for j, s in enumerate(stage))
            for i, stage in enumerate(arch)
        )
        g = cls(stages=stages, network=network or ChainNetwork(), name=name)
        validate_stages(g.stages, source)
        return g

    def __str__(self) -> str:
        lines = [f"chain genotype {self.name or ''}".rstrip()]
        for i, stage in enumerate(self.arch_strings()):
            lines.append(f"  stage {i}: " + ", ".join(stage))
        return "\n".join(lines)


@dataclass(frozen=True)
class Nb201Network:
    """Optional hints of the NAS-Bench-201 network: classes, input side, width C and cells N per stage."""

    num_classes: int | None = None
    input_size: int | None = None
    width: int | None = None
    cells: int | None = None


@dataclass(frozen=True)
class Nb201Genotype:
    """A NAS-Bench-201 cell: ``nodes[i]`` holds the operations into node ``i + 1``, one from each node
    ``0 .. i`` (``none`` included: the benchmark keeps it); ``index`` is the benchmark's index when known."""

    nodes: tuple[tuple[str, ...], ...]
    network: Nb201Network = field(default_factory=Nb201Network)
    name: str | None = None
    description: str | None = None
    index: int | None = None
    kind: str = field(default="nb201", init=False)

    def arch_string(self) -> str:
        """The benchmark's own text, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        return "+".join("|" + "|".join(f"{op}~{src}" for src, op in enumerate(node)) + "|" for node in self.nodes)

    def __str__(self) -> str:
        index = f" (benchmark index {self.index})" if self.index is not None else ""
        return f"nb201 genotype {self.name or ''}".rstrip() + f"{index}\n  {self.arch_string()}"


Genotype = Union[CellGenotype, ChainGenotype, Nb201Genotype]
