"""What tools/train.py, tools/test.py and tools/get_flops.py share: their common options,
reading a config safely, and the config changes their options make (as mmdet's and mmseg's
own tools make them).

Problems a user can fix raise :class:`ConfigError` (a :class:`UserError`); the tools print its
message as one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterator, Optional

from mmengine.config import Config, DictAction

from backbones.checkpoint_io import CheckpointError
from cdarts_deploy.errors import UserError
from downstream.checkpoints import mmengine_safe_globals

__all__ = ["ConfigError", "CfgOptionsAction", "add_runner_options", "apply_launcher_env", "load_config",
           "build_runner", "loading_checkpoints_safely", "describe_load_error", "enable_auto_scale_lr",
           "use_tta", "enable_visualization", "LAUNCHERS", "SETUPTOOLS_SPEC"]

#: Modules that register this project's parts (backbone, checkpoint hook; the decode head needs mmseg).
PROJECT_IMPORTS = ("downstream.mm_backbone", "downstream.checkpoints")
SEGMENTATION_IMPORTS = ("downstream.fasterseg_head",)
#: mmengine's launchers (torchrun sets the variables the 'pytorch' one reads).
LAUNCHERS = ("none", "pytorch", "slurm", "mpi")
#: setuptools that torch accepts (>= 77.0.3) and that still ships pkg_resources, which mmengine uses to
#: resolve mmdet::/mmseg:: config bases; >= 80.9 warns on every import of it, 82 removed it.
SETUPTOOLS_SPEC = "setuptools>=77.0.3,<80.9"
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
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none",
                        help="job launcher: none (one process), pytorch (torchrun, as tools/dist_train.sh does), "
                             "slurm, mpi")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def apply_launcher_env(args: argparse.Namespace) -> None:
    """Older launchers pass --local-rank instead of setting LOCAL_RANK; mmengine reads the variable."""
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))


def _import_project_modules() -> None:
    names = PROJECT_IMPORTS + (SEGMENTATION_IMPORTS if importlib.util.find_spec("mmseg") is not None else ())
    for name in names:
        importlib.import_module(name)


def _pkg_resources_missing() -> bool:
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        return True
    return False


def load_config(
    path: str,
    cfg_options: Optional[dict[str, Any]] = None,
    work_dir: Optional[str] = None,
    launcher: str = "none",
) -> Config:
    """The config at ``path`` with overrides applied, a work_dir set and plain checkpoints enabled."""
    if not os.path.isfile(path):
        raise ConfigError(f"config {path} not found; pass a config file such as "
                          "downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py")
    _import_project_modules()
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:  # mmengine raises many types for broken configs
        if _pkg_resources_missing():
            raise ConfigError(
                f"config {path} cannot be read: mmengine resolves its mmdet::/mmseg:: bases with pkg_resources, "
                f"which this setuptools no longer ships; run: pip install '{SETUPTOOLS_SPEC}'"
            ) from None
        raise ConfigError(
            f"config {path} cannot be read ({_first_line(exc)}); fix the file or its _base_ paths") from None
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except Exception as exc:
            raise ConfigError(
                f"--cfg-options could not be applied ({_first_line(exc)}); use key.sub=value pairs") from None
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


def enable_auto_scale_lr(cfg: Config) -> None:
    """Scale the lr linearly from ``auto_scale_lr.base_batch_size`` to the real total batch size
    (GPUs x samples per GPU): mmengine's Runner does it when ``auto_scale_lr.enable`` is set."""
    scale = cfg.get("auto_scale_lr")
    if not scale or "base_batch_size" not in scale:
        raise ConfigError("--auto-scale-lr needs auto_scale_lr = dict(enable=False, base_batch_size=N) in the config, "
                          "N being the total batch size its lr was set for")
    scale["enable"] = True


def use_tta(cfg: Config) -> None:
    """Test-time augmentation: the config's ``tta_model`` wraps its model, ``tta_pipeline`` replaces the
    test pipeline (mmdet's test.py adds a flip TTA when they are missing; mmseg's needs them)."""
    missing = [k for k in ("tta_model", "tta_pipeline") if k not in cfg]
    if cfg.get("default_scope") == "mmdet" and missing:
        _default_detection_tta(cfg)
    elif missing:
        raise ConfigError(f"--tta needs {' and '.join(missing)} in the config (mmseg's dataset bases define both)")
    tta_model = dict(cfg.tta_model)
    tta_model["module"] = cfg.model
    cfg.model = tta_model
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def _default_detection_tta(cfg: Config) -> None:
    if "tta_model" not in cfg:
        cfg.tta_model = dict(type="DetTTAModel", tta_cfg=dict(nms=dict(type="nms", iou_threshold=0.5), max_per_img=100))
    if "tta_pipeline" not in cfg:
        pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
        pipeline[-1] = dict(type="TestTimeAug", transforms=[
            [dict(type="RandomFlip", prob=1.0), dict(type="RandomFlip", prob=0.0)],
            [dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor",
                                                   "flip", "flip_direction"))],
        ])
        cfg.tta_pipeline = pipeline


def enable_visualization(cfg: Config, show_dir: str) -> None:
    """Draw predictions on the test images into ``show_dir`` (relative to the run's log folder for
    detectors, as mmdet's test.py does; the visualizer's save_dir for segmentors, as mmseg's does)."""
    hook = cfg.get("default_hooks", {}).get("visualization")
    if hook is None:
        raise ConfigError("--show-dir needs default_hooks.visualization in the config (the bases define it)")
    hook["draw"] = True
    if cfg.get("default_scope") == "mmseg":
        cfg.visualizer["save_dir"] = show_dir
    else:
        hook["test_out_dir"] = show_dir


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
