"""What tools/train.py, tools/test.py and tools/get_flops.py share: reading a config safely.

Problems a user can fix raise :class:`UsageError`; the tools print its message
as one line on stderr and exit with status 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from mmengine.config import Config

import downstream.mm_compat  # noqa: F401  (mmdet::/mmseg:: bases without pkg_resources)

__all__ = ["UsageError", "load_config", "build_runner", "describe_load_error"]

#: Modules that register this project's parts (backbone, decode head, checkpoint hook).
PROJECT_IMPORTS = ("backbones.mm_backbones", "downstream.fasterseg_head", "downstream.checkpoints")
_DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


class UsageError(Exception):
    """Bad command-line input: the message names the problem and the fix."""


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
        raise UsageError(f"config {path} not found; pass a config file such as downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py")
    _import_project_modules()
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:  # mmengine raises many types for broken configs
        raise UsageError(f"config {path} cannot be read ({_first_line(exc)}); fix the file or its _base_ paths") from None
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except Exception as exc:
            raise UsageError(f"--cfg-options could not be applied ({_first_line(exc)}); use key.sub=value pairs") from None
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


def describe_load_error(exc: BaseException, checkpoint: Optional[str]) -> Optional[str]:
    """A one-line explanation when ``exc`` is torch refusing to unpickle a checkpoint, else None."""
    import pickle

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text or "Unsupported global" in text:
        culprit = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "Unsupported global" in ln), _first_line(exc))
        return (
            f"checkpoint {checkpoint or ''} holds Python objects that are not loaded without unrestricted unpickling "
            f"({culprit}); only state dicts and mmengine checkpoints are accepted -- re-save the weights with "
            "torch.save(model.state_dict())"
        )
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
