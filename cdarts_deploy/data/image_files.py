"""Which files in a folder are pictures: one list for calibration, evaluation and detector-check folders."""

from __future__ import annotations

#: Suffixes PIL reads out of the box (compared lower-case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


#: What a command does with an image file that does not decode (cdarts_deploy.data.image_reader applies it).
BAD_IMAGE_POLICIES = ("fail", "skip")
#: The one help text of every command's --bad-images option.
BAD_IMAGES_HELP = ("an image file that does not decode (truncated, not an image, over PIL's decompression-bomb "
                   "limit): fail (the default: stop, naming the file) or skip (leave it out and count it)")
