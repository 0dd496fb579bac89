"""Local input images, looked at once per content: a path in, its pixel size and why the
server could not decode it (None when it can). The whole image is decoded, not just its
header, so a truncated JPEG fails at validation, not as a 422 per request once the run is
paid for. Answers are keyed by path, size and mtime: a million rows naming one image decode
it once, and an image edited since is looked at again. Validation (is it an image?) and the
cost estimate (how many megapixels?) both read this one answer."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageFile

_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 0  # PIL refuses an image of twice as many
# Answers are small: room for every image of a grid that cycles through more images than it
# has rows to check (limits.max_requests), so none is decoded twice.
_CACHED = 65_536


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What a local image is: its size in pixels, or why it cannot be sent (`problem`, words
    that follow the file's name: "is truncated or corrupt: ...")."""

    width: int = 0
    height: int = 0
    problem: str | None = None


def inspect(path: Path) -> ImageFacts:
    """The facts of the image at `path`, decoded once per (path, size, mtime)."""
    try:
        stat = os.stat(path)
    except OSError as e:
        return ImageFacts(problem=f"cannot be read: {e.strerror or e}")
    return _inspect(os.fspath(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=_CACHED)
def _inspect(path: str, size: int, mtime_ns: int) -> ImageFacts:
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a script that set it must not let truncation by
    try:
        with warnings.catch_warnings():
            # Between the two bomb limits PIL only warns; the library never prints.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(path)
            except Image.DecompressionBombError:
                return ImageFacts(
                    problem=f"is too large an image to read (over {2 * _MAX_PIXELS} pixels)"
                )
            except OSError as e:
                if e.errno is not None:
                    return ImageFacts(problem=f"cannot be read: {e.strerror or e}")
                return ImageFacts(problem="is not an image (no image format recognises it)")
            except ValueError:
                return ImageFacts(problem="is not an image (no image format recognises it)")
            with img:
                width, height = img.size
                img.draft(None, (1, 1))  # a JPEG still decodes all its data, at 1/8 the memory
                img.load()
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError...
        return ImageFacts(problem=f"is truncated or corrupt: {str(e) or type(e).__name__}")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    return ImageFacts(width, height)
