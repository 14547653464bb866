"""The JSON document: its header (format, version, kind) and the conversions to and from genotypes.

Current documents carry ``"format": "cdarts-genotype"``, ``"version": 1`` and ``"kind"`` (``cell``,
``chain`` or ``nb201``); :func:`from_dict` checks the header and hands the body to the kind's module.  Documents
without a header are the legacy forms (:mod:`cdarts_deploy.genotype.legacy`) or a bare chain
``arch``/``base`` object.
"""

from __future__ import annotations

from typing import Any

from cdarts_deploy.genotype.blocks import BLOCK_KEYS
from cdarts_deploy.genotype.cell import cell_from_dict
from cdarts_deploy.genotype.chain import chain_from_dict
from cdarts_deploy.genotype.errors import GenotypeError, repr_preview
from cdarts_deploy.genotype.legacy import is_legacy_stages, legacy_stages_from_dict, parse_genotype_call
from cdarts_deploy.genotype.model import CellGenotype, Genotype, Nb201Genotype
from cdarts_deploy.genotype.nb201 import nb201_from_dict, nb201_to_dict

FORMAT = "cdarts-genotype"
VERSION = 1


def from_dict(doc: Any, source: str = "<genotype>") -> Genotype:
    """Build a genotype from a parsed JSON document (current or legacy form)."""
    if isinstance(doc, str):
        return CellGenotype(stages=(parse_genotype_call(doc, source),))
    if not isinstance(doc, dict):
        raise GenotypeError(f"found a JSON {type(doc).__name__}, expected an object", "", source)
    if "format" not in doc:
        if is_legacy_stages(doc):
            return legacy_stages_from_dict(doc, source)
        if "arch" in doc or "base" in doc:
            return chain_from_dict({**doc, "kind": "chain"}, source)
        raise GenotypeError(
            f"found an object without 'format', expected \"format\": \"{FORMAT}\" or a legacy "
            "{\"0\": \"Genotype(...)\", ...} object",
            "format",
            source,
        )
    if doc["format"] != FORMAT:
        raise GenotypeError(f"found format {repr_preview(doc['format'])}, expected {FORMAT!r}", "format", source)
    version = doc.get("version")
    if isinstance(version, bool) or version != VERSION:  # JSON true == 1 in Python
        raise GenotypeError(f"found version {repr_preview(version)}, expected {VERSION}", "version", source)
    kind = doc.get("kind")
    if kind == "cell":
        return cell_from_dict(doc, source)
    if kind == "chain":
        return chain_from_dict(doc, source)
    if kind == "nb201":
        return nb201_from_dict(doc, source)
    raise GenotypeError(f"found kind {repr_preview(kind)}, expected 'cell', 'chain' or 'nb201'", "kind", source)


def to_dict(g: Genotype) -> dict:
    """The canonical JSON-ready form of a genotype."""
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kind": g.kind}
    if g.name is not None:
        doc["name"] = g.name
    if g.description is not None:
        doc["description"] = g.description
    if isinstance(g, CellGenotype):
        doc["stages"] = [
            {
                "normal": [[list(e) for e in node] for node in st.normal.nodes],
                "normal_concat": list(st.normal.concat),
                "reduce": [[list(e) for e in node] for node in st.reduce.nodes],
                "reduce_concat": list(st.reduce.concat),
            }
            for st in g.stages
        ]
    elif isinstance(g, Nb201Genotype):
        doc.update(nb201_to_dict(g))
    else:
        doc["stages"] = [[{k: getattr(b, k) for k in BLOCK_KEYS} for b in stage] for stage in g.stages]
    net = {k: v for k, v in g.network.__dict__.items() if v is not None}
    if net:
        doc["network"] = net
    return doc
