"""The one write-then-rename helper: complete files or none, the ordinary file mode, no leftovers."""

import os
import stat

import pytest

from cdarts_deploy import atomic_files


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_text_replaces_whole_file_with_umask_mode(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    atomic_files.write_text(path, "new")
    assert path.read_text() == "new"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert _names(tmp_path) == ["a.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "g.json"
    atomic_files.write_text(path, "before")
    with pytest.raises(TypeError):
        atomic_files.write_bytes(path, object())  # type: ignore[arg-type]
    assert path.read_text() == "before"
    assert _names(tmp_path) == ["g.json"]


def test_write_with_failing_writer_publishes_nothing(tmp_path):
    def writer(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_files.write_with(tmp_path / "ckpt.pth", writer)
    assert _names(tmp_path) == []


def test_temporary_keeps_suffix_for_format_detection(tmp_path):
    tmp = atomic_files.temp_beside(tmp_path / "model.onnx")
    assert tmp.suffix == ".onnx" and tmp.parent == tmp_path and tmp.name.startswith(".")
    tmp.unlink()


def test_atomic_path_interrupted_block_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_files.atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert _names(tmp_path) == []
