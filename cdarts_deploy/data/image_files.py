"""Which files in a folder are pictures: one list for calibration, evaluation and detector-check folders."""

from __future__ import annotations

#: Suffixes PIL reads out of the box (compared lower-case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
