"""The built-in genotypes: package data ``cdarts_deploy/zoo/<name>.json``, found by name."""

from __future__ import annotations

import re
from importlib import resources

from cdarts_deploy.genotype.errors import GenotypeError, repr_preview

ZOO_PACKAGE = "cdarts_deploy"
ZOO_FOLDER = "zoo"

# A zoo name is a plain identifier; anything else is taken as a path.
_ZOO_NAME = re.compile(r"[A-Za-z0-9_]+")


def zoo_names() -> list[str]:
    """Names of the built-in genotypes."""
    folder = resources.files(ZOO_PACKAGE) / ZOO_FOLDER
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def looks_like_zoo_name(text: str) -> bool:
    """Whether ``text`` has the shape of a zoo name (letters, digits, underscores)."""
    return bool(_ZOO_NAME.fullmatch(text))


def zoo_text(name: str) -> str:
    """The JSON text of the built-in genotype ``name``."""
    names = zoo_names()
    if name not in names:
        raise GenotypeError(
            f"no file or zoo genotype named {repr_preview(name)}; expected a path or one of: " + ", ".join(names),
            "",
            name,
        )
    return (resources.files(ZOO_PACKAGE) / ZOO_FOLDER / f"{name}.json").read_text(encoding="utf-8")
