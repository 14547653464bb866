"""What every command shares: one-line usage errors (exit 2), typed option values, the output folder
check, and the one ``main`` wrapper that turns a :class:`UserError` into one line on stderr."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from cdarts_deploy.data.image_files import BAD_IMAGE_POLICIES, BAD_IMAGES_HELP
from cdarts_deploy.errors import UserError


class UsageError(UserError):
    """Bad command-line input: reported as one line, exit status 2."""


def run_main(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
             argv: Sequence[str] | None = None, *, interrupted: str = "interrupted; no files written") -> int:
    """Parse ``argv`` and call ``run``; a :class:`UserError` becomes ``<prog>: error: <message>``, exit 2.

    Anything else is a bug and keeps its traceback.
    """
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create the output folder if needed; a file in the way or an unwritable folder is a usage error."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {out} ({exc.strerror}); pass a writable --out") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {out} is not writable; pass a writable --out")
    return out


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_size(text: str) -> tuple[int, int]:
    """``224`` or ``192x256`` (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size {text!r} is not N or HxW, e.g. 224 or 192x256") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 8:
        raise argparse.ArgumentTypeError(f"input size {text!r} must be N or HxW with sides >= 8")
    return values[0], values[1]


def _int_at_least(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be {what}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "0 or more")


def square_size(text: str) -> int:
    """``224`` or ``224x224``: the side of a square input (``0`` passes through where a command reads it as
    "the default")."""
    if text.strip() == "0":
        return 0
    height, width = parse_size(text)
    if height != width:
        raise argparse.ArgumentTypeError(f"input size {text!r} must be square here: N or NxN, e.g. 224")
    return height


def batch_sizes(text: str) -> list[int]:
    """``1,8,32`` -> [1, 8, 32] (sorted, without repeats)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"batch sizes {text!r} do not parse; give positive integers like 1,8,32") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes {text!r} must be positive integers like 1,8,32")
    return sorted(set(values))


def library_threads(threads: int) -> int | None:
    """``--threads`` as the libraries take it: 0 becomes None, their own default."""
    return threads or None


# ----- options every command spells the same way ---------------------------------------------------------
# One definition each, so the spelling, type and help text cannot drift apart between commands
# (tests/test_command_options.py compares them).

THREADS_HELP = "CPU threads of PyTorch and ONNX Runtime (default 0: the library's default, usually all cores)"
PROGRESS_HELP = "show progress bars (default: on)"
OUT_DIR_HELP = "output folder (created if missing)"
DEVICE_HELP = "auto (the default: the GPU where this command needs or can use one, else the CPU), cpu or cuda"
BATCH_SIZES_HELP = "batch sizes to measure, comma-separated, e.g. 1,8,32"
JSON_HELP = "also write the report as JSON to this file"
EXPORTER_HELP = ("torch ONNX exporter: torchscript (tracing; the default, several times faster, and the graph ONNX "
                 "Runtime quantizes best) or dynamo (torch.export)")


def add_threads_option(parser: argparse.ArgumentParser, **overrides: Any) -> argparse.Action:
    return parser.add_argument("--threads", **{"type": non_negative_int, "default": 0, "metavar": "N",
                                               "help": THREADS_HELP, **overrides})


def add_progress_option(parser: argparse.ArgumentParser, **overrides: Any) -> argparse.Action:
    return parser.add_argument("--progress", **{"action": argparse.BooleanOptionalAction, "default": True,
                                                "help": PROGRESS_HELP, **overrides})


def add_out_dir_option(parser: argparse.ArgumentParser, **overrides: Any) -> argparse.Action:
    """``--out DIR``; pass ``required=True`` or a ``default`` (e.g. ``"."``)."""
    return parser.add_argument("--out", **{"metavar": "DIR", "help": OUT_DIR_HELP, **overrides})


def add_device_option(parser: argparse.ArgumentParser, **overrides: Any) -> argparse.Action:
    return parser.add_argument("--device", **{"choices": ("auto", "cpu", "cuda"), "default": "auto",
                                              "help": DEVICE_HELP, **overrides})


def add_batch_sizes_option(parser: argparse.ArgumentParser, **overrides: Any) -> argparse.Action:
    return parser.add_argument("--batch-sizes", **{"type": batch_sizes, "default": [1], "metavar": "N[,N...]",
                                                   "help": BATCH_SIZES_HELP, **overrides})


def add_json_option(parser: argparse.ArgumentParser, **overrides: Any) -> argparse.Action:
    return parser.add_argument("--json", **{"metavar": "FILE", "help": JSON_HELP, **overrides})


OVERWRITE_HELP = ("replace what an earlier run left where this one writes (its files in --out, or the --json file); "
                  "default: refuse")


def add_overwrite_option(parser: argparse.ArgumentParser, **overrides: Any) -> argparse.Action:
    return parser.add_argument("--overwrite", **{"action": "store_true", "help": OVERWRITE_HELP, **overrides})


def add_bad_images_option(parser: argparse.ArgumentParser, **overrides: Any) -> argparse.Action:
    return parser.add_argument("--bad-images", **{"choices": BAD_IMAGE_POLICIES, "default": "fail",
                                                  "help": BAD_IMAGES_HELP, **overrides})


def add_exporter_option(parser: argparse.ArgumentParser, **overrides: Any) -> argparse.Action:
    # the library's default, deploy.onnx_graph.DEFAULT_EXPORTER (not imported: that would load torch here)
    return parser.add_argument("--exporter", **{"choices": ("torchscript", "dynamo"), "default": "torchscript",
                                                "help": EXPORTER_HELP, **overrides})


# ----- old spellings, accepted for one release --------------------------------------------------------------


def deprecation_line(prog: str, old: str, new: str) -> str:
    return f"{prog}: warning: {old} is deprecated; use {new}"


def add_deprecated_option(parser: argparse.ArgumentParser, old: str, new: str, *, dest: str,
                          action: str | type[argparse.Action] = "store", **kwargs: Any) -> argparse.Action:
    """Accept ``old`` as another spelling of ``new``: it parses into ``dest``, is hidden from ``--help``
    and prints one deprecation line on stderr when used."""
    base = parser._registry_get("action", action, action)  # the class behind "store", "store_true", ...

    class Deprecated(base):  # type: ignore[misc, valid-type]
        def __call__(self, p: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            if not getattr(self, "warned", False):  # one line however often the old spelling is repeated
                print(deprecation_line(p.prog, old, new), file=sys.stderr)
                self.warned = True
            super().__call__(p, namespace, values, option_string)

    # SUPPRESS: the new option's default stands unless the old spelling is given
    return parser.add_argument(old, dest=dest, action=Deprecated, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                               **kwargs)
