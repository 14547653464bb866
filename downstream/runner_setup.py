"""What tools/train.py, tools/test.py and tools/get_flops.py share: their common options and
reading a config safely.

Problems a user can fix raise :class:`ConfigError` (a :class:`UserError`); the tools print its
message as one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional

from mmengine.config import Config, DictAction

import downstream.mm_compat  # noqa: F401  (mmdet::/mmseg:: bases without pkg_resources)
from backbones.checkpoint_io import CheckpointError
from cdarts_deploy.errors import UserError
from downstream.checkpoints import mmengine_safe_globals

__all__ = ["ConfigError", "CfgOptionsAction", "add_runner_options", "apply_launcher_env", "load_config",
           "build_runner", "loading_checkpoints_safely", "describe_load_error"]

#: Modules that register this project's parts (backbone, decode head, checkpoint hook).
PROJECT_IMPORTS = ("downstream.mm_backbone", "downstream.fasterseg_head", "downstream.checkpoints")
_DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


class ConfigError(UserError):
    """A config file (or its --cfg-options overrides) that cannot be used: the message names the fix."""


class CfgOptionsAction(DictAction):
    """mmengine's ``key=value`` option parser, with a usage error instead of a traceback for a pair without ``=``."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values if "=" not in v]
        if bad:
            parser.error(f"{option_string} {bad[0]!r}: expected key=value pairs, e.g. train_dataloader.batch_size=4")
        super().__call__(parser, namespace, values, option_string)


def add_runner_options(parser: argparse.ArgumentParser, work_dir_help: str) -> argparse.ArgumentParser:
    """What every runner tool takes: the config, --work-dir, --cfg-options, --launcher (and torchrun's --local-rank)."""
    parser.add_argument("config", help="config file path")
    parser.add_argument("--work-dir", help=work_dir_help)
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, help="override config entries: key=value")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="job launcher")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def apply_launcher_env(args: argparse.Namespace) -> None:
    """Older launchers pass --local-rank instead of setting LOCAL_RANK; mmengine reads the variable."""
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))


def _import_project_modules() -> None:
    import importlib

    for name in PROJECT_IMPORTS:
        importlib.import_module(name)


def load_config(
    path: str,
    cfg_options: Optional[dict[str, Any]] = None,
    work_dir: Optional[str] = None,
    launcher: str = "none",
) -> Config:
    """The config at ``path`` with overrides applied, a work_dir set and plain checkpoints enabled."""
    if not os.path.isfile(path):
        raise ConfigError(f"config {path} not found; pass a config file such as downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py")
    _import_project_modules()
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:  # mmengine raises many types for broken configs
        raise ConfigError(f"config {path} cannot be read ({_first_line(exc)}); fix the file or its _base_ paths") from None
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except Exception as exc:
            raise ConfigError(f"--cfg-options could not be applied ({_first_line(exc)}); use key.sub=value pairs") from None
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(path).stem)
    for name in _DATALOADERS:
        loader = cfg.get(name)
        # torch refuses persistent workers without workers; mmdet's bases set them.
        if loader is not None and loader.get("num_workers", 1) == 0:
            loader["persistent_workers"] = False
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") == "PlainCheckpointHook" for h in hooks):
        hooks.append(dict(type="PlainCheckpointHook"))
    cfg.custom_hooks = hooks
    return cfg


def build_runner(cfg: Config):
    """mmengine's Runner (or the config's own runner type), as mmdet's and mmseg's tools do."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    if "runner_type" in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


@contextlib.contextmanager
def loading_checkpoints_safely(checkpoint: Optional[str]) -> Iterator[None]:
    """Run the block (a runner's train or test) with ``weights_only`` loads that also accept numpy
    values; torch refusing a checkpoint's pickled objects becomes a one-line :class:`CheckpointError`."""
    with mmengine_safe_globals():
        try:
            yield
        except Exception as exc:
            message = describe_load_error(exc, checkpoint)
            if message is None:
                raise
            raise CheckpointError(message) from None


def describe_load_error(exc: BaseException, checkpoint: Optional[str]) -> Optional[str]:
    """A one-line explanation when ``exc`` is torch refusing to unpickle a checkpoint, else None."""
    import pickle

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text or "Unsupported global" in text:
        # Name the refused global, but not torch's advice to allowlist it (unsafe for a stranger's file).
        found = re.search(r"GLOBAL ([\w.]+)", text)
        culprit = f"refused global {found.group(1)}" if found else _first_line(exc)[:120]
        return (
            f"checkpoint {checkpoint or ''} holds pickled Python objects that are not loaded without unrestricted "
            f"unpickling ({culprit}); only state dicts and mmengine checkpoints are accepted -- re-save the weights "
            "with torch.save(model.state_dict())"
        )
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
