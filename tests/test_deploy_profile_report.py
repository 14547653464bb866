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


def _rows(n: int, shape: list[int]) -> list[ProfileRow]:
    rows = []
    for i in range(n):
        stats = summarize([20.0 + 0.3 * i] * 3, batch=shape[0], warmup=1)
        rows.append(ProfileRow(f"model_{i:02d}", "onnxruntime", "cpu", "fp32", shape, 1000, 500_000_000 + 2_000_000 * i,
                               stats, "session.run", peer=i % 2 == 1))
    return rows


def test_plot_labels_of_many_nearby_points_do_not_overlap(monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))  # keep the figure to measure it
    report = make_report(_rows(12, [32, 3, 32, 32]), {**conditions(2, "cpu"), "gpu": "NVIDIA X"}, None)
    profile_report.plot_latency_vs_macs(report, tmp_path / "p.png", batch=32)
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.axes[0].texts if t.get_text()]
    assert any(t.get_text().startswith("published") for t in texts)  # same layout, GPU and batch: drawn
    assert sum(t.get_text().startswith("model_") for t in texts) >= 8
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)
    plt.close(fig)


def test_published_figures_only_beside_comparable_measurements():
    cpu_imagenet = make_report(_rows(2, [32, 3, 224, 224]), conditions(2, "cpu"), None)
    assert not profile_report.published_comparable(cpu_imagenet, cpu_imagenet["rows"], 32)
    gpu_cifar = make_report(_rows(2, [32, 3, 32, 32]), {**conditions(2, "cpu"), "gpu": "NVIDIA X"}, None)
    assert profile_report.published_comparable(gpu_cifar, gpu_cifar["rows"], 32)
    assert not profile_report.published_comparable(gpu_cifar, gpu_cifar["rows"], 1)
    gpu_imagenet = make_report(_rows(2, [32, 3, 224, 224]), {**conditions(2, "cpu"), "gpu": "NVIDIA X"}, None)
    assert not profile_report.published_comparable(gpu_imagenet, gpu_imagenet["rows"], 32)
