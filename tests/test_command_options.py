"""Every command spells a shared option the same way, with the same type and ``--help`` text; the older
spellings still parse, hidden from ``--help``, with one deprecation line on stderr."""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from cdarts_deploy.commands import args as shared
from cdarts_deploy.commands import compare, env, evaluate, export, latency_table, nb201, profile, train
from downstream import export_cli
from search import cli as search_cli

#: Each console script's parser builder and the least argv it parses (required arguments only).
ALL_COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], list[str]]] = {
    "cdarts-export": (export.build_parser, ["cdarts_cifar"]),
    "cdarts-search": (search_cli.build_parser, []),
    "cdarts-export-mm": (export_cli.build_parser, ["config.py"]),
    "cdarts-profile": (profile.build_parser, ["cdarts_cifar"]),
    "cdarts-train": (train.build_parser, ["cdarts_cifar", "--data-root", "data", "--out", "run"]),
    "cdarts-eval": (evaluate.build_parser, ["best.pth", "--data-root", "data"]),
    "cdarts-compare": (compare.build_parser, ["net.onnx", "net.golden.npz"]),
    "cdarts-latency-table": (latency_table.build_parser, ["--out", "tables"]),
    "cdarts-env": (env.build_parser, []),
    "cdarts-nb201": (nb201.build_parser, ["query", "0", "--benchmark", "bench"]),
}

#: cdarts-export-mm's parser takes mmengine's config-option action, so it needs the mm extra; the core-only run
#: on the lowest supported torch (make test-torch-floor) checks every other command.
HAS_MM = importlib.util.find_spec("mmengine") is not None
COMMANDS = {prog: entry for prog, entry in ALL_COMMANDS.items() if HAS_MM or prog != "cdarts-export-mm"}

#: Shared option -> (its help text, the commands that have it).
SHARED = {
    "--threads": (shared.THREADS_HELP, {"cdarts-export", "cdarts-search", "cdarts-profile", "cdarts-train",
                                        "cdarts-eval", "cdarts-compare", "cdarts-latency-table"}),
    "--progress": (shared.PROGRESS_HELP, {"cdarts-search", "cdarts-train", "cdarts-eval", "cdarts-latency-table"}),
    "--out": (shared.OUT_DIR_HELP, {"cdarts-export", "cdarts-search", "cdarts-export-mm", "cdarts-profile",
                                    "cdarts-train", "cdarts-latency-table"}),
    "--device": (shared.DEVICE_HELP, {"cdarts-search", "cdarts-profile", "cdarts-train"}),
    "--batch-sizes": (shared.BATCH_SIZES_HELP, {"cdarts-profile"}),
    # cdarts-env's --json is a switch (print JSON instead of text), not a report file
    "--json": (shared.JSON_HELP, {"cdarts-eval", "cdarts-compare", "cdarts-nb201"}),
    "--exporter": (shared.EXPORTER_HELP, {"cdarts-export", "cdarts-latency-table"}),
    "--overwrite": (shared.OVERWRITE_HELP, {"cdarts-export", "cdarts-train", "cdarts-eval", "cdarts-compare",
                                            "cdarts-profile", "cdarts-export-mm"}),
    "--bad-images": (shared.BAD_IMAGES_HELP, {"cdarts-export", "cdarts-train", "cdarts-eval", "cdarts-search",
                                              "cdarts-profile"}),
}

#: Old spelling -> (command, argv with it, the same with the new spelling, the namespace attribute).
OLD_SPELLINGS = [
    ("cdarts-export", ["cdarts_cifar", "--batch", "4"], ["cdarts_cifar", "--batch-size", "4"], "batch_size",
     "--batch", "--batch-size"),
    ("cdarts-profile", ["cdarts_cifar", "--batch", "8,1"], ["cdarts_cifar", "--batch-sizes", "1,8"], "batch_sizes",
     "--batch", "--batch-sizes"),
    ("cdarts-latency-table", ["--batch", "2", "--out", "t"], ["--batch-size", "2", "--out", "t"], "batch_size",
     "--batch", "--batch-size"),
]


def _parser(prog: str) -> argparse.ArgumentParser:
    return COMMANDS[prog][0]()


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's actions and its sub-commands'."""
    found = []
    for a in parser._actions:
        found.append(a)
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                found += _all_actions(sub)
    return found


def _actions(parser: argparse.ArgumentParser, option: str) -> list[argparse.Action]:
    return [a for a in _all_actions(parser) if option in a.option_strings]


def _help(parser: argparse.ArgumentParser) -> str:
    """``--help`` of the command and of each of its sub-commands."""
    text = parser.format_help()
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            text += "".join(_help(sub) for sub in a.choices.values())
    return text


def test_every_console_script_is_covered():
    import tomllib

    scripts = tomllib.loads(Path(__file__).parents[1].joinpath("pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(ALL_COMMANDS)
    for prog, (build, _) in COMMANDS.items():
        assert build().prog == prog


@pytest.mark.parametrize("option", list(SHARED))
def test_a_shared_option_is_spelled_typed_and_explained_alike(option):
    help_text, having = SHARED[option]
    seen = []
    for prog in COMMANDS:
        actions = [a for a in _actions(_parser(prog), option) if a.help != argparse.SUPPRESS]
        if prog not in having:
            assert not actions or option == "--json" and prog == "cdarts-env", f"{prog} has {option}; list it"
            continue
        assert len(actions) == 1, f"{prog} lacks {option}"
        a = actions[0]
        assert a.help == help_text, f"{prog} {option}: {a.help!r}"
        seen.append((prog, type(a).__name__, a.type, a.choices, a.metavar, tuple(a.option_strings)))
    assert len({s[1:] for s in seen}) == 1, seen


def test_batch_size_is_one_integer_wherever_it_appears():
    having = set()
    for prog in COMMANDS:
        for a in _actions(_parser(prog), "--batch-size"):
            having.add(prog)
            assert a.dest == "batch_size" and a.nargs is None
            assert a.type(str(3)) == 3
    assert having == {"cdarts-export", "cdarts-search", "cdarts-train", "cdarts-eval", "cdarts-latency-table"}


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_help_shows_no_old_spelling(prog):
    text = _help(_parser(prog))
    assert not re.search(r"--batch(?![-\w])", text), "--batch: use --batch-size or --batch-sizes"
    assert "--out-metrics" not in text
    if "--no-progress" in text:
        assert "--progress | --no-progress" in text, "--no-progress comes with --progress"


@pytest.mark.parametrize("prog, old_argv, new_argv, dest, old, new", OLD_SPELLINGS)
def test_an_old_spelling_parses_to_the_same_value_with_one_warning(capsys, prog, old_argv, new_argv, dest, old, new):
    expected = getattr(_parser(prog).parse_args(new_argv), dest)
    assert capsys.readouterr().err == ""
    i = old_argv.index(old)
    parsed = _parser(prog).parse_args(old_argv + old_argv[i:i + 2])  # the old spelling twice
    assert getattr(parsed, dest) == expected
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{prog}: warning: {old} is deprecated; use {new}"]  # once, though given twice


def test_a_new_spelling_alone_keeps_its_default_when_the_old_is_not_given():
    assert export.build_parser().parse_args(["cdarts_cifar"]).batch_size == 2
    assert profile.build_parser().parse_args(["cdarts_cifar"]).batch_sizes == [1]
    assert latency_table.build_parser().parse_args(["--out", "t"]).batch_size == 1


@pytest.mark.parametrize("prog", sorted(SHARED["--threads"][1]))
def test_threads_zero_means_the_library_default_everywhere(prog):
    build, argv = COMMANDS[prog]
    args = build().parse_args([*argv, "--threads", "0"])
    assert args.threads == 0 and shared.library_threads(args.threads) is None
    if prog != "cdarts-search":  # search's options default to "not given" (presets and config files fill them)
        assert build().parse_args(argv).threads == 0
    assert shared.library_threads(3) == 3


@pytest.mark.parametrize("prog", sorted(SHARED["--threads"][1]))
def test_negative_threads_are_refused_in_one_line(capsys, prog):
    build, argv = COMMANDS[prog]
    with pytest.raises(SystemExit) as info:
        build().parse_args([*argv, "--threads", "-1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: argument --threads") and "0 or more" in err


@pytest.mark.parametrize("prog", sorted(SHARED["--progress"][1]))
def test_progress_switches_both_ways(prog):
    build, argv = COMMANDS[prog]
    assert build().parse_args([*argv, "--no-progress"]).progress is False
    assert build().parse_args([*argv, "--progress"]).progress is True


@pytest.mark.parametrize("prog", [p for p in ("cdarts-export", "cdarts-profile", "cdarts-export-mm", "cdarts-train",
                                            "cdarts-search", "cdarts-latency-table") if p in COMMANDS])
def test_input_size_takes_n_or_nxn_everywhere(prog):
    build, argv = COMMANDS[prog]
    for text in ("64", "64x64"):
        value = build().parse_args([*argv, "--input-size", text]).input_size
        assert value in (64, (64, 64))


def test_profile_device_auto_is_the_old_default():
    args = profile.build_parser().parse_args(["cdarts_cifar", "--no-gemm"])
    assert args.device == "auto"
    assert profile.check_args(args, ["onnxruntime"], is_onnx=False) == "cpu"


def test_the_library_and_the_commands_default_to_the_same_exporter():
    import inspect

    from cdarts_deploy.deploy import onnx_graph
    from cdarts_deploy.deploy.pipeline import OnnxExport

    library = inspect.signature(onnx_graph.export_onnx).parameters["exporter"].default
    assert library == OnnxExport((1, 3, 8, 8)).exporter == onnx_graph.DEFAULT_EXPORTER == "torchscript"
    for prog in SHARED["--exporter"][1]:
        build, argv = COMMANDS[prog]
        (action,) = _actions(build(), "--exporter")
        assert action.default == library and set(action.choices) == set(onnx_graph.EXPORTERS)


def test_latency_table_out_is_a_folder_and_an_old_json_path_still_works(tmp_path, capsys):
    assert latency_table._check_out(str(tmp_path / "tables")) == tmp_path / "tables" / latency_table.TABLE_FILE
    assert (tmp_path / "tables").is_dir() and capsys.readouterr().err == ""
    assert latency_table._check_out(str(tmp_path / "t.json")) == tmp_path / "t.json"
    assert capsys.readouterr().err.splitlines() == [
        "cdarts-latency-table: warning: --out FILE is deprecated; use --out DIR"]
    (tmp_path / "old.json").mkdir()  # an existing folder is a folder, whatever its name
    assert latency_table._check_out(str(tmp_path / "old.json")) == tmp_path / "old.json" / latency_table.TABLE_FILE
    with pytest.raises(shared.UsageError, match="does not exist"):
        latency_table._check_out(str(tmp_path / "missing" / "t.json"))


def _tools_test_parser() -> argparse.ArgumentParser:
    """tools/test.py, the mmdet-style evaluation script (not a console script)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tools_test_script", Path(__file__).parents[1] / "tools" / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def test_tools_test_writes_its_metrics_with_json_and_still_takes_out_metrics(capsys):
    (action,) = _actions(_tools_test_parser(), "--json")
    assert action.help == shared.JSON_HELP and action.metavar == "FILE"
    argv = ["config.py", "epoch_1.pth"]
    assert _tools_test_parser().parse_args([*argv, "--json", "m.json"]).json == "m.json"
    assert capsys.readouterr().err == ""
    assert _tools_test_parser().parse_args([*argv, "--out-metrics", "m.json"]).json == "m.json"
    assert capsys.readouterr().err.splitlines() == ["test.py: warning: --out-metrics is deprecated; use --json"]
    assert "--out-metrics" not in _tools_test_parser().format_help()


def _script(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent))
    assert exe, f"{name} is not on the venv's PATH"
    return exe


def test_console_script_old_spelling_warns_then_runs(tmp_path):
    proc = subprocess.run([_script("cdarts-export"), str(tmp_path / "nothing_here.json"), "--onnx", "--batch", "4",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    lines = proc.stderr.splitlines()
    assert lines[0] == "cdarts-export: warning: --batch is deprecated; use --batch-size", proc.stderr
    assert proc.returncode == 2 and len(lines) == 2 and "nothing_here" in lines[1]  # parsed on to the real error


def test_console_script_refuses_negative_threads_in_one_line(tmp_path):
    proc = subprocess.run([_script("cdarts-compare"), "a.onnx", "b.npz", "--threads", "-1"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--threads" in proc.stderr, proc.stderr
