"""The base networks of the chain space: by name, the tiny test base, a JSON file, or given stages.

A base is the chain network before the search picks each searchable block's (kernel, expansion);
the search, the latency table and chain documents (``"base": "cdarts_b_base"``) all resolve it here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from cdarts_deploy.errors import UserError
from cdarts_deploy.genotype.errors import GenotypeError, repr_preview

#: Named bases a chain document may give as ``"base"``.
BASE_NAMES = ("cdarts_a_base", "cdarts_b_base")

#: A 4-stage base small enough for CPU tests: 4 searchable blocks in 2 stages.
TINY_BASE: list[list[str]] = [
    ["ds_r1_k3_s1_e1_c8_se0.25"],
    ["ir_r1_k3_s2_e4_c16_se0.25", "ir_r1_k3_s1_e4_c16_se0.25"],
    ["ir_r1_k3_s2_e4_c24_se0.25", "ir_r1_k3_s1_e4_c24_se0.25"],
    ["cn_r1_k1_s1_c64"],
]


def base_arch(name: str) -> list[list[str]]:
    """The base networks of the chain space, before the search picks each block's (kernel, expansion)."""
    stem = ["ds_r1_k3_s1_e1_c16_se0.25"]
    head = ["cn_r1_k1_s1_c960"]

    def stage(n: int, c: int, first_stride: int) -> list[str]:
        return [f"ir_r1_k3_s{first_stride if j == 0 else 1}_e4_c{c}_se0.25" for j in range(n)]

    if name == "cdarts_b_base":
        stage3 = stage(3, 80, 2) + ["ir_r2_k3_s1_e4_c80_se0.25"]
        return [stem, stage(4, 24, 2), stage(4, 40, 2), stage3, stage(4, 96, 1), stage(4, 192, 2), head]
    if name == "cdarts_a_base":
        return [stem, stage(1, 24, 2), stage(2, 40, 2), stage(3, 80, 2), stage(4, 96, 1), stage(3, 192, 2), head]
    raise GenotypeError(
        f"found base {repr_preview(name)}, expected 'cdarts_a_base' or 'cdarts_b_base' or a list of stages", "base"
    )


def resolve_base(base: str | Sequence[Sequence[str]]) -> list[list[str]]:
    """A base architecture by name (``cdarts_a_base`` / ``cdarts_b_base``) or as arch strings (copied)."""
    if isinstance(base, str):
        return base_arch(base)
    return [list(stage) for stage in base]


def base_from_option(base: str) -> list[list[str]]:
    """The base of a ``--base`` option: a name, ``tiny`` or a JSON file of arch-string stages."""
    if base == "tiny":
        return resolve_base(TINY_BASE)
    if base in BASE_NAMES:
        return base_arch(base)
    path = Path(base)
    if not path.is_file():
        raise UserError(f"--base {base!r}: expected cdarts_a_base, cdarts_b_base, tiny or a JSON file of stages")
    try:
        stages = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--base {base}: unreadable JSON ({exc}); expected a list of lists of arch strings") from None
    if not (isinstance(stages, list)
            and all(isinstance(s, list) and all(isinstance(a, str) for a in s) for s in stages)):
        raise UserError(f"--base {base}: expected a JSON list of lists of arch strings")
    return stages
