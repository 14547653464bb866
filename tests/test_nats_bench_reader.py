"""The NATS-Bench reader on real benchmark files: accuracies, the refused pickles, the size bounds, the command."""

from __future__ import annotations

import bz2
import io
import json
import pickle
import pickletools
import shutil
import tracemalloc
from collections import OrderedDict
from pathlib import Path

import pytest

from cdarts_deploy.commands import nb201 as nb201_cmd
from cdarts_deploy.nats_bench import BenchmarkError, open_benchmark, safe_pickle

SUBSET = Path(__file__).parent / "data" / "nats_bench_tss_subset"
ARCH_11 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|"


def _globals_named(path: Path) -> set[str]:
    """Every (module, name) a pickle file resolves, read without unpickling it."""
    names, strings = set(), []
    for op, arg, _ in pickletools.genops(bz2.decompress(path.read_bytes())):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            names.add(f"{strings[-2]}.{strings[-1]}")
        elif op.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
    return names


def test_the_allow_list_is_what_the_real_files_name():
    named = set().union(*(_globals_named(p) for p in SUBSET.glob("*.pbz2")))
    assert named == {"collections.OrderedDict", "numpy.core.multiarray.scalar", "numpy.dtype"}
    assert named <= {f"{m}.{n}" for m, n in safe_pickle.ALLOWED}


def test_records_read_as_plain_pickle_would():
    for path in sorted(SUBSET.glob("*.pbz2")):
        assert safe_pickle.load_pbz2(path) == pickle.loads(bz2.decompress(path.read_bytes())), path.name


def test_meta_and_accuracies_of_the_three_records():
    bench = open_benchmark(SUBSET)
    assert len(bench.archs) == 15625 and bench.index_of(ARCH_11) == 11
    acc = bench.accuracies(11)
    # the benchmark's 200-epoch numbers, mean of seeds 777, 888, 999
    assert acc["cifar10"].valid == pytest.approx((87.748 + 88.132 + 87.94) / 3, abs=1e-3)
    assert acc["cifar10"].test == pytest.approx((91.79 + 91.76 + 91.2) / 3)
    assert acc["cifar100"].test == pytest.approx((66.86 + 67.68 + 68.28) / 3, abs=1e-3)
    assert acc["ImageNet16-120"].valid == pytest.approx((29.3667 + 31.4333 + 30.4333) / 3, abs=1e-3)
    assert {a.seeds for a in acc.values()} == {3}
    assert acc["cifar10"].params_m == pytest.approx(0.802426)
    for index in (0, 284):
        values = bench.accuracies(index)
        assert all(0 < v.valid < 100 and 0 < v.test < 100 for v in values.values())


def test_reading_three_records_stays_small():
    """One record at a time: the peak of Python allocations is a few record sizes, not the benchmark."""
    tracemalloc.start()
    try:
        bench = open_benchmark(SUBSET)
        for index in (0, 11, 284):
            bench.accuracies(index)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # about 4.6 MB: the meta strings and index, one decompressed record and its objects


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _bench_with_record(tmp_path: Path, record_bytes: bytes, index: int = 11) -> Path:
    folder = tmp_path / "bench"
    folder.mkdir()
    shutil.copy(SUBSET / "meta.pickle.pbz2", folder)
    (folder / f"{index:06d}.pickle.pbz2").write_bytes(record_bytes)
    return folder


def test_a_pickle_naming_another_class_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran.txt"
    payload = pickle.dumps(OrderedDict([("200", {"arch_index": 11, "x": _Payload(marker)})]))
    pickle.loads(payload)  # the payload is real: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    folder = _bench_with_record(tmp_path, bz2.compress(payload))
    with pytest.raises(BenchmarkError, match=r"refused: the pickle names builtins\.exec") as info:
        open_benchmark(folder).accuracies(11)
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["os.system", "numpy.frombuffer", "collections.Counter", "builtins.getattr"])
def test_other_names_are_refused(name):
    module, attr = name.rsplit(".", 1)
    data = b"\x80\x04" + pickle.dumps(module)[2:-1] + pickle.dumps(attr)[2:-1] + b"\x93."
    with pytest.raises(BenchmarkError, match="refused"):
        safe_pickle.loads(data, "x")


def test_truncated_file_is_refused_in_one_line(tmp_path):
    raw = (SUBSET / "000011.pickle.pbz2").read_bytes()
    folder = _bench_with_record(tmp_path, raw[: len(raw) // 2])
    with pytest.raises(BenchmarkError, match="truncated") as info:
        open_benchmark(folder).accuracies(11)
    assert "\n" not in str(info.value)


def test_truncated_pickle_inside_complete_bz2_is_refused(tmp_path):
    data = bz2.decompress((SUBSET / "000011.pickle.pbz2").read_bytes())
    folder = _bench_with_record(tmp_path, bz2.compress(data[: len(data) // 2]))
    with pytest.raises(BenchmarkError, match="not a readable pickle"):
        open_benchmark(folder).accuracies(11)


def test_oversized_files_are_refused(tmp_path):
    bomb = tmp_path / "bomb.pickle.pbz2"
    bomb.write_bytes(bz2.compress(b"\0" * (4 << 20)))  # 4 MiB from a few hundred bytes
    with pytest.raises(BenchmarkError, match="decompresses to more than 1048576 bytes"):
        safe_pickle.load_pbz2(bomb, max_bytes=1 << 20)
    with pytest.raises(BenchmarkError, match="more than the 100 bytes a benchmark file may have"):
        safe_pickle.load_pbz2(SUBSET / "000011.pickle.pbz2", max_compressed=100)


def test_not_bz2_and_missing_files(tmp_path):
    folder = _bench_with_record(tmp_path, b"not bz2 at all")
    with pytest.raises(BenchmarkError, match="not bz2 data"):
        open_benchmark(folder).accuracies(11)
    with pytest.raises(BenchmarkError, match="has no record of architecture 12"):
        open_benchmark(folder).accuracies(12)


def test_the_single_file_benchmark_is_refused_with_the_way_out(tmp_path):
    pth = tmp_path / "NAS-Bench-201-v1_0-e61699.pth"
    pth.write_bytes(b"x")
    for path in (pth, tmp_path):
        with pytest.raises(BenchmarkError, match="single-file benchmark .*NATS-tss-v1_0-3ffb9-simple"):
            open_benchmark(path)


def test_query_prints_architecture_11(capsys):
    assert nb201_cmd.main(["query", "11", "--benchmark", str(SUBSET)]) == 0
    out = capsys.readouterr().out
    assert ARCH_11 in out
    assert "cifar10            87.94   91.58" in out
    assert "cifar100           67.45   67.61" in out
    assert "ImageNet16-120     30.41   30.17" in out


def test_query_by_string_with_json(capsys):
    assert nb201_cmd.main(["query", ARCH_11, "--benchmark", str(SUBSET), "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["index"] == 11 and doc["accuracy"]["cifar10"]["test"] == pytest.approx(91.5833, abs=1e-3)


@pytest.mark.parametrize("arch, message", [
    ("15625", "out of range"),
    ("12", "has no record of architecture 12"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|bogus~2|", "found operation 'bogus'"),
    ("|none~0|+|none~0|none~1|", "found 2 node(s)"),
    ("darts_v2", "is a cell genotype"),
])
def test_query_mistakes_are_one_line(capsys, arch, message):
    assert nb201_cmd.main(["query", arch, "--benchmark", str(SUBSET)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("cdarts-nb201: error: ")


def test_query_by_genotype_file(tmp_path, capsys):
    from cdarts_deploy import genotype as gt

    path = tmp_path / "found.json"
    gt.save(gt.nb201_from_string(ARCH_11, name="found"), path)
    assert nb201_cmd.main(["query", str(path), "--benchmark", str(SUBSET)]) == 0
    assert "architecture 11:" in capsys.readouterr().out


def test_restricted_unpickler_keeps_numpy_scalars_as_numbers():
    data = io.BytesIO()
    pickle.Pickler(data, protocol=4).dump(1.5)
    assert safe_pickle.loads(data.getvalue(), "x") == 1.5
