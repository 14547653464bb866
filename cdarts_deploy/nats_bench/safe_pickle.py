"""bz2-compressed pickles read within bounds by an unpickler that builds only what the benchmark files use.

A pickle is a program: ``pickle.load`` calls whatever callables the file names.  The NATS-Bench
"simple" files name exactly three: ``collections.OrderedDict``, ``numpy.core.multiarray.scalar`` and
``numpy.dtype`` (numpy 2 writes the first as ``numpy._core.multiarray.scalar``).  This unpickler
resolves those to pure Python stand-ins (a numpy scalar becomes a Python ``float``/``int``/``bool``
decoded with :mod:`struct`) and refuses every other name before anything is called.

Bounds: the compressed file and the decompressed stream are capped, and decompression stops as soon
as the cap is passed, so a small file cannot expand into gigabytes.  A truncated stream, trailing
garbage and any malformed pickle end in one :class:`BenchmarkError`.
"""

from __future__ import annotations

import bz2
import collections
import io
import os
import pickle
import struct
from pathlib import Path
from typing import Any

from cdarts_deploy.nats_bench.errors import BenchmarkError

#: A real record is about 90 KB compressed and 330 KB decompressed; the meta file 35 KB and 1.4 MB.
MAX_COMPRESSED_BYTES = 16 << 20
MAX_DECOMPRESSED_BYTES = 32 << 20

# numpy dtype codes the files may use -> struct format character.
_STRUCT_CODES = {
    "f8": "d", "f4": "f", "f2": "e",
    "i8": "q", "i4": "i", "i2": "h", "i1": "b",
    "u8": "Q", "u4": "I", "u2": "H", "u1": "B",
    "b1": "?",
}
_BYTE_ORDERS = {"<": "<", ">": ">", "=": "<", "|": "<"}


class _DType:
    """Stands in for ``numpy.dtype``: remembers the code and byte order, decodes nothing by itself."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(code, str) or code not in _STRUCT_CODES:
            raise pickle.UnpicklingError(f"numpy dtype {str(code)[:20]!r} is not a scalar type of the benchmark")
        self.code = code
        self.order = "<"

    def __setstate__(self, state: Any) -> None:
        # numpy's state tuple: (version, byte order, ...); only the byte order matters for a scalar.
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in _BYTE_ORDERS:
            raise pickle.UnpicklingError("numpy dtype state is not a scalar type's")
        self.order = _BYTE_ORDERS[state[1]]


def _scalar(dtype: Any, data: Any = b"") -> float | int | bool:
    """Stands in for ``numpy.core.multiarray.scalar``: the value as a Python number."""
    if not isinstance(dtype, _DType) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar without a dtype and its bytes")
    fmt = dtype.order + _STRUCT_CODES[dtype.code]
    if len(data) != struct.calcsize(fmt):
        raise pickle.UnpicklingError(f"numpy scalar of {len(data)} bytes for dtype {dtype.code}")
    return struct.unpack(fmt, data)[0]


#: (module, name) -> what it builds.  Nothing else is resolved.
ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
}


class _Refused(Exception):
    """A name outside :data:`ALLOWED`; kept apart from malformed-pickle errors for the message."""


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED` names; no persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"{module}.{name}"[:120]) from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


def decompress_bounded(raw: bytes, max_bytes: int, source: str) -> bytes:
    """The bz2 stream(s) of ``raw``, refusing more than ``max_bytes`` of output or a truncated stream."""
    out = bytearray()
    data = raw
    while True:
        decompressor = bz2.BZ2Decompressor()
        try:
            while not decompressor.eof:
                chunk = decompressor.decompress(data, max_length=max_bytes + 1 - len(out))
                data = b""
                out += chunk
                if len(out) > max_bytes:
                    raise BenchmarkError(
                        f"decompresses to more than {max_bytes} bytes, expected one benchmark record; "
                        "the file is not a NATS-Bench record (replace it with the original)", source)
                if decompressor.needs_input:
                    raise BenchmarkError(
                        "ends inside its bz2 stream (truncated); copy the file again from the benchmark", source)
        except BenchmarkError:
            raise
        except (OSError, EOFError, ValueError) as exc:
            raise BenchmarkError(f"is not bz2 data ({exc}); expected a *.pickle.pbz2 file of the benchmark",
                                 source) from None
        data = decompressor.unused_data
        if not data:
            return bytes(out)


def read_file(path: str | os.PathLike, max_compressed: int = MAX_COMPRESSED_BYTES) -> bytes:
    """The raw bytes of a benchmark file, refusing one larger than ``max_compressed`` before reading it."""
    source = str(path)
    too_big = (f"more than the {max_compressed} bytes a benchmark file may have; the file is not a NATS-Bench "
               "record (replace it with the original)")
    try:
        size = os.stat(path).st_size
        if size > max_compressed:
            raise BenchmarkError(f"is {size} bytes, {too_big}", source)
        with open(path, "rb") as handle:
            data = handle.read(size + 1)  # not the cap: read(n) allocates n bytes up front
    except OSError as exc:
        raise BenchmarkError(f"cannot be read ({exc.strerror}); check the --benchmark folder", source) from None
    if len(data) > max_compressed:  # grew after stat()
        raise BenchmarkError(f"is {too_big}", source)
    return data


def loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` building only :data:`ALLOWED` names."""
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except _Refused as exc:
        raise BenchmarkError(
            f"refused: the pickle names {exc}, which a NATS-Bench file never does (allowed: "
            + ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED)) + "); use the original benchmark files",
            source) from None
    except RecursionError:
        raise BenchmarkError("refused: the pickle nests too deeply; use the original benchmark files",
                             source) from None
    except Exception as exc:  # noqa: BLE001 -- whatever malformed bytes raise, the answer is one line
        raise BenchmarkError(
            f"is not a readable pickle ({type(exc).__name__}: {str(exc)[:80]}); copy the file again from the "
            "benchmark", source) from None


def load_pbz2(path: str | os.PathLike, max_compressed: int = MAX_COMPRESSED_BYTES,
              max_bytes: int = MAX_DECOMPRESSED_BYTES) -> Any:
    """Read one ``*.pickle.pbz2`` file within the bounds."""
    source = str(Path(path))
    return loads(decompress_bounded(read_file(path, max_compressed), max_bytes, source), source)
