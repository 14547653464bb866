"""The floors of the code base: no module imports one on a floor above it.

Every import statement (module level or inside a function) of every project module is read with
``ast``, so a lazy import cannot hide a dependency.  The table is the one in README.md ("Layout").
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cdarts_deploy", "backbones", "search", "downstream", "tools", "benchmarks")
MM_PACKAGES = ("mmengine", "mmcv", "mmdet", "mmseg")
COMMANDS = ("search.cli", "search.__main__", "downstream.export_cli")


def floor_of(module: str) -> tuple[int, str]:
    """(floor, wing) of a project module; the wing separates the libraries on floor 2."""
    top = module.split(".")[0]
    if module.startswith("cdarts_deploy.commands") or module in COMMANDS or top in ("tools", "benchmarks"):
        return 3, "commands"
    if module.startswith("cdarts_deploy.deploy"):
        return 2, "deploy"
    if module.startswith("cdarts_deploy.training"):
        return 2, "training"
    if top in ("search", "downstream"):
        return 2, top
    if top == "backbones" or module.startswith(("cdarts_deploy.drawing", "cdarts_deploy.data")):
        return 1, top
    if top == "cdarts_deploy":
        return 0, "format"
    raise AssertionError(f"module {module} has no floor; add it to README's layout table and this test")


# Floor-2 wings that must not see each other: (importer, imported).
FORBIDDEN_WINGS = {
    ("deploy", "downstream"), ("search", "downstream"), ("training", "downstream"),
    ("deploy", "search"), ("search", "deploy"), ("training", "search"), ("search", "training"), ("deploy", "training"),
}


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if "configs" in rel.parts:  # mmengine config files are data read by mmengine, not imported modules
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            # `from package import submodule` imports the submodule
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


MODULES = project_modules()


def _project_target(name: str) -> str | None:
    """The longest project module that ``name`` names, or None for a third-party import."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_no_higher_floor(module):
    floor, wing = floor_of(module)
    for name in sorted(imports_of(module, MODULES[module])):
        target = _project_target(name)
        if target is None:
            top = name.split(".")[0]
            if top in MM_PACKAGES:
                assert wing in ("downstream",) or floor == 3, (
                    f"{module} imports {name}: only downstream/ may use OpenMMLab")
            if floor == 0:
                assert top not in ("torch", "numpy", "matplotlib", "timm", "onnx", "onnxruntime"), (
                    f"{module} is on the format floor and must stay pure Python, but imports {name}")
            continue
        target_floor, target_wing = floor_of(target)
        assert target_floor <= floor, f"{module} (floor {floor}) imports {target} (floor {target_floor})"
        assert (wing, target_wing) not in FORBIDDEN_WINGS, f"{module} ({wing}) must not import {target} ({target_wing})"


def test_the_check_sees_a_violation(tmp_path):
    # the check is only real if it fails on a wrong input
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from cdarts_deploy.commands import args\n")
    names = imports_of("cdarts_deploy.genotype.bad", bad)
    assert "cdarts_deploy.commands.args" in names
    assert floor_of(_project_target("cdarts_deploy.commands.args"))[0] > floor_of("cdarts_deploy.genotype")[0]


# ---------------------------------------------------------------------------
# One rule, one home: a moved rule is defined only in its home, and its old homes stay empty.
# ---------------------------------------------------------------------------

#: name -> the one module that may define it (None: no module may; the name was retired).
ONE_HOME = {
    # base networks of the chain space
    "base_arch": "cdarts_deploy.genotype.bases",
    "resolve_base": "cdarts_deploy.genotype.bases",
    "base_from_option": "cdarts_deploy.genotype.bases",
    "TINY_BASE": "cdarts_deploy.genotype.bases",
    "BASE_NAMES": "cdarts_deploy.genotype.bases",
    "resolve_base_option": None,
    # one chain block (below both model and chain, which imported each other)
    "Block": "cdarts_deploy.genotype.blocks",
    "parse_arch_string": "cdarts_deploy.genotype.blocks",
    "validate_block": "cdarts_deploy.genotype.blocks",
    "validate_stages": "cdarts_deploy.genotype.blocks",
    "block_from_dict": "cdarts_deploy.genotype.blocks",
    "chain_from_arch_strings": None,
    "validate_chain": None,
    # the latency table's statistics (the table format is latency_table_format)
    "spearman": "cdarts_deploy.latency_stats",
    "fit_correction": "cdarts_deploy.latency_stats",
    "relative_errors": "cdarts_deploy.latency_stats",
    "CORRECTIONS": "cdarts_deploy.latency_stats",
    # the torchrun process group and the image arrays of both the search and the retraining
    "DistContext": "cdarts_deploy.data.distributed",
    "init_distributed": "cdarts_deploy.data.distributed",
    "shutdown": "cdarts_deploy.data.distributed",
    "barrier": "cdarts_deploy.data.distributed",
    "ArrayImages": "cdarts_deploy.data.images",
    "shuffled_loader": "cdarts_deploy.data.images",
    # which files are pictures; the ImageNet normalisation comes from timm
    "IMAGE_SUFFIXES": "cdarts_deploy.data.image_files",
    "IMAGENET_MEAN": None,
    "IMAGENET_STD": None,
}


def definitions(path: Path) -> set[str]:
    """Names a file defines: functions and classes at any depth, and module-level assignments."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = {node.name for node in ast.walk(tree)
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        else:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else []
        found.update(t.id for t in targets if isinstance(t, ast.Name))
    return found


def homeless_definitions(modules: dict[str, Path]) -> list[str]:
    wrong = []
    for module, path in sorted(modules.items()):
        for name in sorted(definitions(path) & set(ONE_HOME)):
            if ONE_HOME[name] != module:
                wrong.append(f"{module} defines {name} (its one home: {ONE_HOME[name] or 'none, retired'})")
    return wrong


def test_moved_rules_are_defined_only_in_their_home():
    assert homeless_definitions(MODULES) == []
    for name, home in ONE_HOME.items():
        if home is not None:
            assert name in definitions(MODULES[home]), f"{home} no longer defines {name}; update ONE_HOME"


def test_one_home_check_sees_a_second_home(tmp_path):
    # the check is only real if it fails on a wrong input
    bad = tmp_path / "chain_space.py"
    bad.write_text("TINY_BASE = []\n\ndef resolve_base_option(base):\n    return base\n")
    assert len(homeless_definitions({"search.chain_space": bad})) == 2


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Circles among ``modules`` (lazy imports count): each as the modules around it, smallest first."""
    graph = {}
    for module, path in modules.items():
        targets = {_project_target(name) for name in imports_of(module, path)}
        # a package's __init__ importing its own modules (and they it, for a sibling) is not a circle of logic
        graph[module] = {t for t in targets if t in modules and t != module and not module.startswith(t + ".")
                         and not (modules[module].name == "__init__.py" and t.startswith(module + "."))}
    cycles, done = [], set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cycle = sorted(trail)
                    if tuple(cycle) not in done:
                        done.add(tuple(cycle))
                        cycles.append(trail)
                elif nxt not in trail and nxt > start and len(trail) < 6:
                    stack.append((nxt, trail + [nxt]))
    return cycles


def test_no_import_circles():
    # a circle forces one side into a lazy import; its shared piece belongs in a module below both
    assert import_cycles(MODULES) == []


def test_circle_check_sees_a_circle(tmp_path):
    # the check is only real if it fails on a wrong input (the old model <-> chain pair)
    model, chain = tmp_path / "model.py", tmp_path / "chain.py"
    model.write_text("def f():\n    from cdarts_deploy.genotype.chain import parse\n")
    chain.write_text("from cdarts_deploy.genotype.model import Block\n")
    assert import_cycles({"cdarts_deploy.genotype.model": model, "cdarts_deploy.genotype.chain": chain}) != []


def test_scripts_do_not_edit_the_import_path():
    """Scripts run from the installed package or as ``python -m tools.NAME`` from a checkout."""
    edits = [str(path.relative_to(ROOT)) for path in MODULES.values()
             if re.search(r"sys\.path\.(insert|append)\(", path.read_text(encoding="utf-8"))]
    assert edits == []


# ---------------------------------------------------------------------------
# Small modules: a product file over MAX_LINES lines holds more than one purpose; split it.
# ---------------------------------------------------------------------------

MAX_LINES = 400
#: Temporary: files being split into smaller modules at the time this limit was set.  Remove an entry as soon as its
#: file is under MAX_LINES; the list is meant to be empty.
OVER_THE_LIMIT_FOR_NOW: set[str] = set()


def long_files(paths: list[Path], limit: int = MAX_LINES) -> list[str]:
    """``path: N lines`` for each file longer than ``limit`` lines."""
    found = []
    for path in sorted(paths):
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > limit:
            found.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {count} lines")
    return found


def test_no_product_file_is_over_the_line_limit():
    # every project module (tests/ and downstream/configs are not product code: see project_modules)
    paths = [p for p in MODULES.values() if str(p.relative_to(ROOT)) not in OVER_THE_LIMIT_FOR_NOW]
    assert long_files(paths) == []


def test_line_limit_check_sees_a_long_file(tmp_path):
    # the check is only real if it fails on a wrong input
    long, short = tmp_path / "long.py", tmp_path / "short.py"
    long.write_text("x = 1\n" * (MAX_LINES + 1))
    short.write_text("x = 1\n" * MAX_LINES)
    assert long_files([long, short]) == [f"{long}: {MAX_LINES + 1} lines"]
