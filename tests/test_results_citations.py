"""Measurements live in docs/results/ and are cited from the docs and the code: every citation names a file there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"docs/results/([\w.*-]*[\w*])")
PRODUCT = ("cdarts_deploy", "backbones", "search", "downstream", "tools", "benchmarks")


def cited_files(paths: list[Path]) -> dict[str, list[str]]:
    """Each cited ``docs/results/NAME`` (a glob where it has ``*``) -> the files that cite it."""
    found: dict[str, list[str]] = {}
    for path in paths:
        for name in CITATION.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def missing(citations: dict[str, list[str]], results: Path) -> list[str]:
    """Citations no file answers; a name without a suffix is a benchmark's output stem (NAME.json, NAME_224.md, ...)."""
    return [f"{name} (cited by {', '.join(sorted(set(by)))})" for name, by in sorted(citations.items())
            if not any(results.glob(name if "." in name or "*" in name else name + "*"))]


def test_every_results_citation_names_a_file():
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    sources += [p for package in PRODUCT for p in sorted((ROOT / package).rglob("*.py"))]
    citations = cited_files(sources)
    assert citations, "no citation found: the pattern no longer matches how the docs cite results"
    assert missing(citations, ROOT / "docs" / "results") == []


def test_the_check_sees_a_missing_file(tmp_path):
    # the check is only real if it fails on a wrong input
    (tmp_path / "present.md").write_text("x")
    citations = {"present.md": ["a.md"], "absent.md": ["b.md"], "pres*": ["c.md"], "present": ["d.md"],
                 "absent": ["e.md"]}
    assert missing(citations, tmp_path) == ["absent (cited by e.md)", "absent.md (cited by b.md)"]
