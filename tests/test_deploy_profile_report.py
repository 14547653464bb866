"""The profile report: rows, derived compute figures, JSON/Markdown/PNG written together or not at all."""

from __future__ import annotations

import pytest

from cdarts_deploy.deploy import profile_report
from cdarts_deploy.deploy.profile_report import ProfileRow, make_report, markdown, write_reports
from cdarts_deploy.deploy.timing import summarize
from cdarts_deploy.deploy.versions import conditions


def test_report_writing_failure_leaves_nothing(monkeypatch, tmp_path):
    report = make_report([], conditions(1, "cpu"), None)

    def broken_plot(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(profile_report, "plot_latency_vs_macs", broken_plot)
    with pytest.raises(RuntimeError):
        write_reports(report, tmp_path, "x")
    assert list(tmp_path.iterdir()) == []


def test_rows_get_floor_and_achieved_rate_and_published_rows_stay_apart(tmp_path):
    stats = summarize([10.0, 10.0, 10.0], batch=2, warmup=1)
    row = ProfileRow("m", "torch", "cpu", "fp32", [2, 3, 32, 32], 1000, 5_000_000, stats, "forward only")
    report = make_report([row], conditions(1, "cpu"), {"gflops": 10.0, "dtype": "float32", "size": 256,
                                                       "device": "cpu", "threads": 1})
    (r,) = report["rows"]
    assert r["derived"]["compute_floor_ms"] == pytest.approx(2 * 5e6 * 2 / 10e9 * 1e3)
    assert r["derived"]["achieved_gflops"] == pytest.approx(2 * 5e6 * 2 / 10e-3 / 1e9)
    md = markdown(report)
    assert "| m | torch | fp32 | 2x3x32x32 |" in md and "not measured" in md
    files = write_reports(report, tmp_path, "p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.md", "p.png"] == sorted(f.name for f in files)
