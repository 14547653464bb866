"""The one way commands read image files: which files count, how each is decoded, and one rule for the bad ones.

* A file counts when its suffix is one of :data:`IMAGE_SUFFIXES` and its name does not start with ``.`` (hidden
  files and macOS ``._*`` resource files are ignored, as are hidden class folders).
* Every counted file is decoded once before use, so a bad file is found before any work starts (not in epoch 3):
  a truncated file, a non-image under an image suffix, or one over :data:`MAX_IMAGE_PIXELS` (PIL's
  decompression-bomb limit) is *bad*.  Policy ``fail`` (the default) stops with the file's name; ``skip`` leaves
  bad files out and reports how many.
* A folder may hold at most :data:`MAX_IMAGE_FILES` images.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder

from cdarts_deploy.data.image_files import BAD_IMAGE_POLICIES as POLICIES
from cdarts_deploy.data.image_files import IMAGE_SUFFIXES
from cdarts_deploy.errors import UserError

#: PIL's decompression-bomb limit (about 89 megapixels): a larger image is refused, not decoded.
MAX_IMAGE_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
#: Most image files one folder tree may hold (each is decoded once when the folder is read).
MAX_IMAGE_FILES = 2_000_000


class BadImageError(UserError):
    """An image file that cannot be used (reported with its name, exit status 2)."""


def is_image_file(path: str | os.PathLike) -> bool:
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be decoded, or None when it decodes."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its limit; here any size over it is refused
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    return f"is {img.width}x{img.height} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit"
                img.draft("RGB", (64, 64))  # JPEG: decode at a reduced scale; still reads every byte
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"is over PIL's {MAX_IMAGE_PIXELS:,}-pixel decompression-bomb limit"
    except UnidentifiedImageError:
        return "is not an image PIL can read"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        return f"does not decode ({str(exc).splitlines()[0][:80] or exc.__class__.__name__})"
    return None


def read_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` as RGB (the ImageFolder loader); a file that went bad since it was screened is one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, UnidentifiedImageError, OSError,
            SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(f"{path} does not decode ({exc.__class__.__name__}); remove or replace it") from None


SKIP_HINT = "remove it or pass --bad-images skip"


def screen(files: Iterable[str | os.PathLike], policy: str, option: str,
           log: Callable[[str], None] | None = None, *, fix: str = SKIP_HINT, limit: int | None = None) -> list[Path]:
    """The files that decode (the first ``limit`` of them); a bad one stops (``fail``) or is left out (``skip``,
    counted in one log line)."""
    if policy not in POLICIES:
        raise UserError(f"--bad-images {policy!r}: expected one of {', '.join(POLICIES)}")
    kept, skipped = [], []
    for i, f in enumerate(files):
        if i >= MAX_IMAGE_FILES:
            raise UserError(f"{option}: more than {MAX_IMAGE_FILES:,} images; use a smaller folder")
        why = problem(f)
        if why is None:
            kept.append(Path(f))
            if limit is not None and len(kept) >= limit:
                break
        elif policy == "fail":
            raise BadImageError(f"{option}: {f} {why}; {fix}")
        else:
            skipped.append(Path(f))
    if skipped:
        (log or _stderr)(f"{option}: skipped {len(skipped)} bad image file(s), e.g. {skipped[0]}")
    return kept


def _stderr(message: str) -> None:
    print(f"[{Path(sys.argv[0]).name}] {message}", file=sys.stderr)


def folder_files(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder``, sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_file(p))


class SafeImageFolder(ImageFolder):
    """torchvision's ImageFolder without hidden class folders, loading through :func:`read_rgb`."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {c: i for i, c in enumerate(classes)}


def image_folder(root: str | os.PathLike, policy: str, option: str, *, transform: Any = None,
                 allow_empty: bool = False, keep_class: Callable[[str], bool] | None = None,
                 log: Callable[[str], None] | None = None, fix: str = SKIP_HINT) -> ImageFolder:
    """An ImageFolder over ``root`` whose samples all decode (see the module's rule); torchvision's own errors
    (no class folder, an empty class) pass through for the caller to word."""
    def valid(p: str) -> bool:
        return is_image_file(p) and (keep_class is None or keep_class(Path(p).parent.name))

    dataset = SafeImageFolder(str(root), transform=transform, loader=read_rgb, is_valid_file=valid,
                              allow_empty=allow_empty)
    good = set(screen([p for p, _ in dataset.samples], policy, option, log, fix=fix))
    if len(good) < len(dataset.samples):
        dataset.samples = [(p, t) for p, t in dataset.samples if Path(p) in good]
        dataset.imgs = dataset.samples
        dataset.targets = [t for _, t in dataset.samples]
    return dataset
