"""Let mmengine 0.10 resolve ``mmdet::`` / ``mmseg::`` config bases without ``pkg_resources``.

mmengine finds installed OpenMMLab packages through ``pkg_resources``, which
recent setuptools (the version torch >= 2.9 asks for) no longer ships.  When it
is missing, :func:`apply` swaps mmengine's two lookup helpers for equivalents
built on :mod:`importlib.metadata`; with ``pkg_resources`` present it does nothing.
Importing this module applies it.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os.path as osp

__all__ = ["apply", "is_installed", "get_installed_path"]


def is_installed(package: str) -> bool:
    try:
        md.distribution(package)
        return True
    except md.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        return spec is not None and spec.origin is not None


def get_installed_path(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        # The distribution name differs from the module name (e.g. mmsegmentation -> mmseg).
        dist = md.distribution(package)
        top_level = (dist.read_text("top_level.txt") or "").split()
        if not top_level:
            raise ValueError(f"can not infer the module name of {package}")
        spec = importlib.util.find_spec(top_level[0])
        if spec is None or spec.origin is None:
            raise ValueError(f"{package} is installed but its module {top_level[0]} cannot be found")
    return osp.dirname(spec.origin)


def apply() -> None:
    try:
        import pkg_resources  # noqa: F401
        return
    except ImportError:
        pass
    import mmengine.config.config as config_module
    import mmengine.utils as utils_module
    import mmengine.utils.package_utils as package_utils

    for module in (package_utils, utils_module, config_module):
        for name, fn in (("is_installed", is_installed), ("get_installed_path", get_installed_path)):
            if hasattr(module, name):
                setattr(module, name, fn)


apply()
