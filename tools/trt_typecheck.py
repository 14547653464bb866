"""Type-check the TensorRT-facing modules against the TensorRT stubs (``tensorrt-stubs`` from PyPI) with mypy.

``python -m tools.trt_typecheck`` installs the stubs into ``build/trt-stubs`` (``--no-deps``: the package depends
on TensorRT itself, which needs a GPU; and not into the environment, where its ``tensorrt`` folder would make
``import tensorrt`` succeed without TensorRT), repairs the signatures the published stubs get wrong (parameters
named ``in``, a parameter without a default after defaulted ones: syntax errors that stop mypy), and runs mypy on
the modules alone.  Exit status: mypy's.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "build" / "trt-stubs"
VERSION = "10.13.0.35.1"
MODULES = ["cdarts_deploy/deploy/trt.py", "cdarts_deploy/deploy/trt_runner.py", "cdarts_deploy/deploy/trt_inspect.py",
           "cdarts_deploy/deploy/trt_compare.py", "cdarts_deploy/deploy/trt_qdq.py"]


def _split_params(params: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in params:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current] if current.strip() else parts


def repair_line(line: str) -> str:
    """One ``def`` line of a stub made valid Python: ``in`` renamed, missing defaults after defaults added."""
    match = re.match(r"^(\s*def \w+\()(.*)(\)\s*->.*:.*)$", line)
    if not match:
        return line
    head, params, tail = match.groups()
    fixed, seen_default = [], False
    for part in _split_params(params):
        name = part.split(":")[0].strip()
        if name == "in":
            part = part.replace("in:", "in_:", 1)
        if "=" in part:
            seen_default = True
        elif seen_default and not name.startswith("*"):
            part = part + " = ..."
        fixed.append(part)
    return head + ",".join(fixed) + tail


def repair(path: Path) -> int:
    """Repair every stub line that does not parse; returns how many were changed."""
    lines = path.read_text(encoding="utf-8").splitlines()
    changed = 0
    for i, line in enumerate(lines):
        if line.lstrip().startswith("def "):
            probe = line.strip() + ("\n    ..." if line.rstrip().endswith(":") else "")
            try:
                ast.parse(probe)
            except SyntaxError:
                lines[i] = repair_line(line)
                changed += lines[i] != line
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ast.parse("\n".join(lines))  # the whole file must parse now
    return changed


def main() -> int:
    if not (STUBS / "tensorrt").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(STUBS),
                        f"tensorrt-stubs=={VERSION}"], check=True)
    for stub in sorted(STUBS.glob("tensorrt*/*.pyi")):
        repair(stub)
    config = STUBS / "mypy.ini"  # the stubs are checked against, not checked: their own slips are not ours
    config.write_text("[mypy]\nfollow_imports = silent\nignore_missing_imports = True\ncheck_untyped_defs = True\n"
                      "[mypy-tensorrt_bindings.*]\nignore_errors = True\n[mypy-tensorrt.*]\nignore_errors = True\n",
                      encoding="utf-8")
    env = {**os.environ, "MYPYPATH": str(STUBS)}
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(config), *MODULES]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
