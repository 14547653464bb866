"""What every command shares: one-line usage errors, typed option values, the output folder, run_main."""

from __future__ import annotations

import argparse
import os

import pytest

from cdarts_deploy.commands.args import (
    OneLineParser,
    UsageError,
    non_negative_int,
    parse_size,
    positive_int,
    prepare_out_dir,
    run_main,
)
from cdarts_deploy.errors import UserError


def test_one_line_parser_exits_2_with_one_line(capsys):
    parser = OneLineParser(prog="tool")
    parser.add_argument("--n", type=positive_int)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--n", "zero"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tool: error: ") and "(see tool --help)" in err


def test_parse_size():
    assert parse_size("224") == (224, 224)
    assert parse_size("192x256") == (192, 256)
    assert parse_size("192X256") == (192, 256)
    for bad in ("abc", "4", "1x2x3", "8x4"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)


def test_positive_and_non_negative_int():
    assert positive_int("3") == 3 and non_negative_int("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="positive"):
        positive_int("0")
    with pytest.raises(argparse.ArgumentTypeError, match="0 or more"):
        non_negative_int("-1")
    with pytest.raises(argparse.ArgumentTypeError, match="not an integer"):
        positive_int("x")


def test_prepare_out_dir(tmp_path):
    assert prepare_out_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        prepare_out_dir(blocker)
    with pytest.raises(UsageError, match="writable --out"):
        prepare_out_dir(blocker / "sub")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UsageError, match="not writable"):
            prepare_out_dir(locked)


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="tool")
    parser.add_argument("what")
    return parser


def test_run_main_turns_a_user_error_into_one_line_and_exit_2(capsys):
    def run(args):
        raise UserError(f"bad {args.what}; pass a good one")

    assert run_main("tool", _parser(), run, ["input"]) == 2
    assert capsys.readouterr().err == "tool: error: bad input; pass a good one\n"
    assert run_main("tool", _parser(), lambda args: 0, ["x"]) == 0


def test_run_main_lets_other_exceptions_propagate():
    def run(args):
        raise RuntimeError("a bug keeps its traceback")

    with pytest.raises(RuntimeError, match="a bug"):
        run_main("tool", _parser(), run, ["x"])


def test_run_main_reports_an_interrupt_with_exit_130(capsys):
    def run(args):
        raise KeyboardInterrupt

    assert run_main("tool", _parser(), run, ["x"], interrupted="interrupted; nothing written") == 130
    assert capsys.readouterr().err == "tool: interrupted; nothing written\n"
