"""The supported torch range (pyproject.toml) admits both pairs the Makefile installs: the tested pair in .venv
and the floor pair of ``make test-torch-floor`` (whose own install step checks that pip keeps the floor)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, deps) if r.name in ("torch", "torchvision")}


def makefile_pair(variable: str) -> dict[str, str]:
    line = re.search(rf"^{variable} := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    return dict(item.split("==") for item in line.split())


def test_pyproject_declares_a_range_not_one_build():
    for name, req in declared().items():
        assert any(s.operator == ">=" for s in req.specifier), f"{name}: {req} has no floor"
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{name}: {req} pins one release"


def test_the_range_admits_the_tested_pair_and_starts_at_the_floor():
    reqs = declared()
    tested, floor = makefile_pair("TORCH_PAIR"), makefile_pair("TORCH_FLOOR")
    assert set(tested) == set(floor) == set(reqs) == {"torch", "torchvision"}
    for name, req in reqs.items():
        assert req.specifier.contains(tested[name]) and req.specifier.contains(floor[name]), (name, str(req))
        lowest = next(s.version for s in req.specifier if s.operator == ">=")
        # the floor pair is the declared floor, so the CI target tests what pyproject.toml promises
        assert floor[name].split(".")[:2] == lowest.split(".")[:2], (name, floor[name], lowest)
