"""Running the sections in order, and the verdict of each: passed, failed or not applicable (with the reason)."""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from tqdm import tqdm

from .capabilities import Capability
from .context import BudgetSpent, Context
from .settings import Settings

PASSED, FAILED, NOT_APPLICABLE = "passed", "failed", "not applicable"


@dataclass
class Section:
    key: str
    title: str
    needs: Mapping[str, tuple[str, ...]]  # device -> capabilities it needs there
    run: Callable[[Context], dict]
    scope: Callable[[Settings, str], str]  # what it runs, for --dry-run


def applicability(section: Section, device: str, caps: Mapping[str, Capability | None]) -> tuple[str, str]:
    """("run", what) or (NOT_APPLICABLE, why) or (FAILED, why) for a capability present but unusable."""
    reasons, broken = [], []
    for need in section.needs.get(device, ()):
        cap = caps.get(need)
        if cap is None or cap.available:
            continue
        (broken if cap.broken else reasons).append(cap.reason)
    if broken:
        return FAILED, "; ".join(broken)
    if reasons:
        return NOT_APPLICABLE, "; ".join(reasons)
    return "run", ""


def judge(value: Any) -> tuple[str, str]:
    """A section's own verdict: every check it recorded passed (and it recorded at least one)."""
    checks = value.get("checks", []) if isinstance(value, dict) else []
    if not checks:
        return FAILED, "the section recorded no check"
    failed = [c for c in checks if not c.get("passed")]
    if failed:
        return FAILED, "; ".join(f"{c['name']}: {c.get('detail', 'failed')}" for c in failed)
    rows = value.get("parity", [])
    if rows and all(r.get("passed") is None for r in rows):  # reported only: nothing was compared
        return FAILED, f"none of the {len(rows)} parity rows was judged"
    return PASSED, f"{len(checks)} check(s) passed"


def run_sections(sections: Sequence[Section], ctx: Context, on_update: Callable[[dict], None] = lambda s: None,
                 ) -> dict[str, dict]:
    """Run every applicable section in order; record passed / failed / not applicable with the reason."""
    results: dict[str, dict] = {}
    bar = tqdm(sections, desc="gpu_check", unit="section", file=sys.stderr, leave=False, disable=None)
    for section in bar:
        bar.set_postfix_str(section.key)
        state, why = applicability(section, ctx.device, ctx.caps)
        start = time.monotonic()
        entry: dict[str, Any] = {"title": section.title, "scope": section.scope(ctx.settings, ctx.device)}
        if state != "run":
            entry.update(status=state, reason=why)
        elif time.monotonic() > ctx.deadline:
            entry.update(status=FAILED, reason=f"not run: the time budget ({ctx.settings.budget_s:.0f} s) was spent "
                                               "before it started, and this machine can run it")
        else:
            try:
                value = section.run(ctx)
                entry.update(value)
                entry["status"], entry["reason"] = judge(value)
            except BudgetSpent as exc:
                entry.update(status=FAILED, reason=f"not finished: {exc}; this machine can run it")
            except Exception as exc:  # record and carry on: one broken runtime must not hide the others
                entry.update(status=FAILED, reason=f"{type(exc).__name__}: {exc}",
                             traceback=traceback.format_exc(limit=6))
        entry["seconds"] = round(time.monotonic() - start, 2)
        results[section.key] = entry
        tqdm.write(f"[gpu_check] {section.key}: {entry['status']} - {entry['reason']} ({entry['seconds']} s)",
                   file=sys.stderr)
        on_update(results)
    bar.close()
    return results


def exit_code(results: Mapping[str, dict]) -> int:
    """1 when any section failed (a runnable section that was skipped counts as failed), else 0."""
    return 1 if any(r["status"] == FAILED for r in results.values()) else 0
