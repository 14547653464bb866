"""Latency tables: the format (round trip, refusals), the model-quality statistics, and the command."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from cdarts_deploy import latency_stats
from cdarts_deploy import latency_table_format as lt
from cdarts_deploy.commands.latency_table import TABLE_FILE
from cdarts_deploy.commands.latency_table import main as table_main
from cdarts_deploy.genotype import CHAIN_CHOICES, TINY_BASE
from fake_latency import FakeTimer

NETWORK = {"num_classes": 3, "stem_channels": 8, "head_channels": 128}
INPUT = 32


@pytest.fixture(scope="module")
def fake_table() -> lt.LatencyTable:
    from cdarts_deploy.deploy.latency_measure import measure_chain_table

    return measure_chain_table(TINY_BASE, NETWORK, INPUT, 1, FakeTimer(), progress=False)


def test_table_round_trip(tmp_path, fake_table):
    path = tmp_path / "t.json"
    lt.save(fake_table, path)
    back = lt.load(path)
    assert back.to_dict() == fake_table.to_dict()
    doc = json.loads(path.read_text())
    assert doc["format"] == "cdarts-latency-table" and doc["version"] == 1
    # every searchable block of the tiny base (2 stages x 2 blocks), every candidate, plus stem / fixed / head
    assert sorted((b["stage"], b["index"]) for b in doc["blocks"]) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(sorted(b["ms"]) == sorted(f"k{k}_e{e}" for k, e in CHAIN_CHOICES) for b in doc["blocks"])
    assert [f["name"] for f in doc["fixed"]] == ["stem", "blocks.0.0", "blocks.3.0", "head"]
    assert doc["fixed"][0]["input_shape"] == [1, 3, INPUT, INPUT]
    assert doc["blocks"][0]["input_shape"] == [1, 8, INPUT // 2, INPUT // 2]  # after the stride-2 stem
    assert doc["conditions"]["measurement"]["runtime"] == "onnxruntime-cpu" and "versions" in doc["conditions"]


def _doc(table):
    return json.loads(lt.dumps(table))


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(version=2), ["version 2", "version 1"]),
    (lambda d: d.update(format="other"), ["not a latency table"]),
    (lambda d: d.update(runtime="tflite"), ["runtime"]),
    (lambda d: d["blocks"][0]["ms"].pop("k3_e4"), ["blocks[0].ms"]),
    (lambda d: d["blocks"][1]["ms"].update(k5_e6=float("nan")) or d["blocks"][1]["ms"].update(k5_e6=-1.0),
     ["blocks[1].ms.k5_e6"]),
    (lambda d: d["blocks"][0].update(input_shape=[1, 8, 16]), ["blocks[0].input_shape"]),
    (lambda d: d["blocks"].pop(), ["searchable blocks"]),
    (lambda d: d["fixed"][0].update(input_shape=[1, 3, 64, 64]), ["fixed[0]"]),
    (lambda d: d.update(extra=1), ["unknown"]),
    (lambda d: d.update(correction={"scale": 0, "offset_ms": 0}), ["correction.scale"]),
])
def test_foreign_or_damaged_tables_are_refused(tmp_path, fake_table, edit, words):
    doc = _doc(fake_table)
    edit(doc)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(lt.LatencyTableError) as info:
        lt.load(path)
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert "cdarts-latency-table" in msg  # the fix


def test_unreadable_and_missing_tables_are_one_line_errors(tmp_path):
    with pytest.raises(lt.LatencyTableError, match="not found"):
        lt.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[" * 10000)
    with pytest.raises(lt.LatencyTableError, match="nested"):
        lt.load(bad)


def test_check_refuses_another_runtime_input_size_base_or_shape(fake_table):
    t = fake_table
    assert t.check(runtime="onnxruntime-cpu", space="chain", input_size=INPUT, batch=1, base=TINY_BASE,
                   network=NETWORK) is t
    with pytest.raises(lt.LatencyTableError, match="measured on onnxruntime-cpu, this run needs tensorrt-fp16"):
        t.check(runtime="tensorrt-fp16")
    with pytest.raises(lt.LatencyTableError, match="input size 32, this run uses 224"):
        t.check(input_size=224)
    with pytest.raises(lt.LatencyTableError, match="another base"):
        t.check(base=[*TINY_BASE[:-1], ["cn_r1_k1_s1_c32"]])
    with pytest.raises(lt.LatencyTableError, match="num_classes 3, this run has 10"):
        t.check(network={"num_classes": 10})
    shapes = {(b.stage, b.index): list(b.input_shape) for b in t.blocks}
    assert t.check(block_shapes=shapes) is t
    tampered = copy.deepcopy(shapes)
    tampered[(2, 1)][1] += 8
    with pytest.raises(lt.LatencyTableError, match="stage 2 index 1 was measured with input"):
        t.check(block_shapes=tampered)


def test_prediction_is_the_sum_of_the_table_through_the_correction(fake_table):
    from cdarts_deploy.deploy.latency_measure import chain_network

    doc = _doc(fake_table)
    choices = [5, 0, 3, 2]
    genotype, _ = chain_network(TINY_BASE, NETWORK, choices)
    names = [f"k{k}_e{e}" for k, e in CHAIN_CHOICES]
    expected = sum(f["ms"] for f in doc["fixed"]) + sum(b["ms"][names[c]] for b, c in zip(doc["blocks"], choices))
    assert fake_table.predict_ms(genotype) == pytest.approx(expected)
    corrected = copy.copy(fake_table)
    corrected.correction = {"scale": 0.5, "offset_ms": 0.25}
    assert corrected.predict_ms(genotype) == pytest.approx(0.5 * expected + 0.25)


def test_model_quality_statistics_match_scipy():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, generator=g).tolist()
    y = [v + 0.3 * n for v, n in zip(x, torch.rand(20, generator=g).tolist())]
    y[3] = y[4]  # a tie
    assert latency_stats.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    fit = stats.linregress(x, y)
    scale, offset = latency_stats.fit_correction(x, y, "affine")
    assert (scale, offset) == pytest.approx((fit.slope, fit.intercept))
    assert latency_stats.fit_correction(x, y, "offset") == pytest.approx((1.0, float(np.mean(y) - np.mean(x))))
    # the default: a ratio
    assert latency_stats.fit_correction(x, y) == pytest.approx((float(np.mean(y) / np.mean(x)), 0.0))
    assert latency_stats.fit_correction([1.0, 2.0], [3.0, 5.0], "affine") == pytest.approx((1.0, 2.5))  # offset below 3
    err = latency_stats.relative_errors([1.1, 1.8], [1.0, 2.0])
    assert err["mean_rel_error"] == pytest.approx(0.1) and err["max_rel_error"] == pytest.approx(0.1)
    assert err["mean_signed_rel_error"] == pytest.approx(0.0)
    assert err["within_5pct"] == 0.0 and err["within_10pct"] == 1.0  # both exactly 10% off


def test_within_shares_count_each_prediction_against_its_own_measurement():
    measured = [10.0, 20.0, 40.0, 80.0]
    predicted = [10.4, 21.5, 44.8, 80.0]  # 4%, 7.5%, 12%, 0%
    assert latency_stats.within_shares(predicted, measured) == {"within_5pct": 0.5, "within_10pct": 0.75}
    # relative to the measured latency, not the predicted one: 0.85 is 8.5% of 10 but 9.3% of 9.15
    assert latency_stats.within_shares([9.15], [10.0], (0.09,)) == {"within_9pct": 1.0}
    assert latency_stats.within_shares([10.0], [9.15], (0.09,)) == {"within_9pct": 0.0}
    with pytest.raises(ValueError):
        latency_stats.within_shares([], [])


@pytest.mark.parametrize("text, ms", [("12ms", 12.0), ("12", 12.0), ("0.012s", 12.0), ("800us", 0.8),
                                      (" 3.5MS ", 3.5)])
def test_durations(text, ms):
    assert lt.parse_duration_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["fast", "-1ms", "0", "nanms", "12 m"])
def test_bad_durations(text):
    with pytest.raises(lt.LatencyTableError, match="positive duration"):
        lt.parse_duration_ms(text)


# -- the command ---------------------------------------------------------------------------------------------

TINY_ARGS = ["--space", "chain", "--base", "tiny", "--input-size", str(INPUT), "--stem-channels", "8",
             "--head-channels", "128", "--num-classes", "3", "--threads", "1", "--no-progress"]


def test_command_measures_a_table_on_onnxruntime(tmp_path, capsys, single_torch_thread):
    out = tmp_path / "tables"
    assert table_main([*TINY_ARGS, "--warmup", "3", "--iters", "10", "--validate", "3", "--out", str(out)]) == 0
    table = lt.load(out / TABLE_FILE)
    assert table.runtime == "onnxruntime-cpu" and table.input_size == INPUT and table.batch == 1
    assert all(v > 0 for b in table.blocks for v in b.ms.values()) and all(f.ms > 0 for f in table.fixed)
    m = table.conditions["measurement"]
    assert (m["threads"], m["warmup"], m["iters"], m["statistic"], m["precision"]) == (1, 3, 10, "median", "fp32")
    assert table.conditions["versions"]["onnxruntime"] and table.conditions["load"]["loadavg"] is not None
    c = table.correction
    assert c["children"] == 3 and c["scale"] > 0 and set(c["before"]) == set(c["after"])
    assert "Spearman" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runtimes are available here")
@pytest.mark.parametrize("runtime, words", [("tensorrt-fp16", "NVIDIA GPU"), ("torch-cuda", "NVIDIA GPU")])
def test_command_refuses_a_runtime_this_machine_lacks(tmp_path, capsys, runtime, words):
    out = tmp_path / "t"
    assert table_main([*TINY_ARGS, "--runtime", runtime, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cdarts-latency-table: error:") and words in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("argv, words", [
    (["--out", "{tmp}/blocker"], "is a file"),
    (["--base", "nonsense", "--out", "{tmp}/t"], "--base"),
    (["--runtime", "tflite", "--out", "{tmp}/t"], "--runtime"),
    (["--input-size", "0", "--out", "{tmp}/t"], "--input-size"),
    (["--input-size", "16", "--out", "{tmp}/t"], "at least 32"),
    (["--input-size", "64x96", "--out", "{tmp}/t"], "square"),
])
def test_command_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, words):
    (tmp_path / "blocker").write_text("a file, not a folder")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = table_main([*TINY_ARGS, *argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "t").exists()


def test_isolated_parts_sum_close_to_the_network_in_multiply_adds(fake_table):
    """The parts cut out of the network cover it: their multiply-adds add up to the whole child's."""
    from backbones.complexity import count_macs
    from cdarts_deploy.deploy.latency_measure import chain_network, chain_parts

    fixed, blocks = chain_parts(TINY_BASE, NETWORK, INPUT, 1)
    _, child = chain_network(TINY_BASE, NETWORK, [0] * 4)
    parts = [m for _, m, _ in fixed] + [cands["k3_e4"] for _, cands in blocks.values()]
    shapes = [s for _, _, s in fixed] + [s for s, _ in blocks.values()]
    macs = 0
    for m, s in zip(parts, shapes):
        hooks, count = [], [0]

        def conv_hook(mod, args, out):
            if isinstance(mod, torch.nn.Conv2d):
                count[0] += out.numel() // out.shape[0] * mod.in_channels // mod.groups * math.prod(mod.kernel_size)
            elif isinstance(mod, torch.nn.Linear):
                count[0] += mod.in_features * mod.out_features
        for sub in m.modules():
            hooks.append(sub.register_forward_hook(conv_hook))
        with torch.no_grad():
            m.eval()(torch.zeros(*s))
        for h in hooks:
            h.remove()
        macs += count[0]
    assert macs == count_macs(child, INPUT)


def test_spread_children_cover_more_of_the_space_than_uniform_ones(fake_table):
    from cdarts_deploy.deploy.latency_measure import random_children

    def sums(children):
        return [fake_table.raw_ms(lt.genotype_candidates(g)) for g in children]

    uniform, spread = sums(random_children(fake_table, 20, 0)), sums(random_children(fake_table, 20, 0, spread=True))
    assert len(set(uniform)) > 1 and max(spread) - min(spread) > max(uniform) - min(uniform)
    assert sums(random_children(fake_table, 5, 3)) == sums(random_children(fake_table, 5, 3))  # seeded


def test_parts_are_timed_in_interleaved_rounds(monkeypatch):
    """Every part gets ``iters`` timed runs in total, split over the rounds, parts visited in turn."""
    import cdarts_deploy.deploy.latency_measure as lm

    sessions, calls = [], []

    def fake_session(path, threads=None):
        sessions.append(object())
        return sessions[-1]

    def fake_time_ort(sess, x, warmup, iters):
        part = sessions.index(sess)
        calls.append((part, warmup, iters))
        return [(1.0 + part, 0.5 + part, 0.5 + part)] * iters  # (wall, thread CPU, process CPU)

    monkeypatch.setattr(lm, "export_onnx", lambda module, path, shape, **kw: open(path, "wb").close())
    monkeypatch.setattr(lm.ort_sessions, "session", fake_session)
    monkeypatch.setattr(lm, "_time_ort", fake_time_ort)
    parts = [(torch.nn.Identity(), (1, 3, 8, 8)), (torch.nn.Identity(), (1, 3, 8, 8))]
    with lm.PartTimer("onnxruntime-cpu", threads=1, warmup=6, iters=10, rounds=3) as timer:
        assert timer.time_all(parts) == [1.0, 2.0]
        assert timer.medians == {"wall": [1.0, 2.0], "cpu": [0.5, 1.5]}
    assert [c[0] for c in calls] == [0, 1, 0, 1, 0, 1]  # round by round
    assert [c[1] for c in calls] == [6, 6, 2, 2, 2, 2]  # full warm-up first, a short one in later rounds
    assert sum(c[2] for c in calls if c[0] == 0) == 10 and sum(c[2] for c in calls if c[0] == 1) == 10


def test_cpu_clock_times_onnxruntime_on_the_calling_thread(single_torch_thread):
    """One intra-op thread computes on the calling thread: its CPU time is at most the elapsed time, and both
    clocks come from the same runs."""
    from cdarts_deploy.deploy.latency_measure import PartTimer

    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3))
    with PartTimer("onnxruntime-cpu", threads=1, warmup=2, iters=8, rounds=2, clock="cpu") as timer:
        cpu = timer.time_all([(conv, (1, 3, 64, 64))])
        assert timer.settings()["clock"] == "cpu"
    assert cpu == timer.medians["cpu"] and 0 < cpu[0] <= timer.medians["wall"][0] * 1.02 + 0.05


def test_cpu_clock_refuses_other_threads_and_runtimes():
    from cdarts_deploy.deploy import latency_measure as lm
    from cdarts_deploy.errors import UserError

    for threads in (0, 2):  # the runtime's default or several intra-op threads: work leaves the calling thread
        with pytest.raises(UserError, match="--threads 1"):
            lm.PartTimer("onnxruntime-cpu", threads=threads, clock="cpu")
    with pytest.raises(UserError, match="use one of wall, cpu"):
        lm.PartTimer("onnxruntime-cpu", threads=1, clock="gpu")
    # runs whose process CPU time exceeds the timing thread's: the runtime computed elsewhere, refused
    lm._check_one_thread([[(10.0, 9.8, 10.0)] * 5])
    with pytest.raises(UserError, match="other threads"):
        lm._check_one_thread([[(10.0, 5.0, 10.0)] * 5, [(10.0, 9.8, 10.0)] * 5])


def test_command_cpu_clock_with_several_threads_is_one_line_exit_2(tmp_path, capsys):
    argv = [a for a in TINY_ARGS if a not in ("--threads", "1")]
    assert table_main([*argv, "--threads", "2", "--clock", "cpu", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--clock cpu" in err[0], err
    assert not (tmp_path / "t").exists()
