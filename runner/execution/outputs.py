"""Downloaded outputs: checks that bytes are an image, names the file from the request key only
(never from a server-given name), writes it atomically as OUT/images/<first two hex digits of
the key>/<key>-<n>.<ext>, and describes it (sha256, width, height, content type) for the
manifest. A failed write is a WriteFailed (the run stops).

The 256 sub-folders keep every folder under ~10,000 files up to ~2.5 million outputs (file
systems, file browsers and the Hugging Face Hub all slow down or refuse beyond that). Readers
never rebuild a path: they follow the manifest's outputs[].file, so run folders written flat
(images/<key>-<n>.<ext>, before sub-folders) still resume, report and export."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import warnings
from pathlib import Path

from PIL import Image

from ..errors import cannot_write
from ..folder.journal import OutputFile
from ..folder.names import IMAGES

MAX_OUTPUT_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 64_000_000
SHARD_HEX = 2  # sub-folder name: this many leading hex digits of the key
_FORMATS = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
}


class NotAnImage(ValueError):
    """The downloaded bytes are not an image this runner accepts."""


def describe(data: bytes) -> tuple[str, str, int, int]:
    """(extension, content type, width, height) of image bytes, or NotAnImage."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (width, height) = img.format or "", img.size
                img.verify()
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        raise NotAnImage(f"output is not a readable image ({type(exc).__name__})") from None
    if fmt not in _FORMATS:
        raise NotAnImage(f"output image format {fmt or 'unknown'} is not accepted")
    if width * height > MAX_PIXELS:
        raise NotAnImage(f"output image is too large ({width}x{height})")
    ext, ctype = _FORMATS[fmt]
    return ext, ctype, width, height


def save_image(out_dir: Path, key: str, index: int, data: bytes) -> OutputFile:
    """Write output number `index` of request `key`; idempotent (same name, replaced)."""
    if not key.isalnum():  # keys are hex digests; anything else could escape the folder
        raise ValueError(f"unsafe output name {key!r}")
    ext, ctype, width, height = describe(data)
    shard = f"{IMAGES}/{key[:SHARD_HEX]}"
    folder = out_dir / shard
    name = f"{key}-{index}.{ext}"
    target = folder / name
    # A temporary name of its own per write: a stopped run's thread may still be saving the
    # same output while the resumed run saves it again.
    tmp = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except OSError as exc:  # a full disk stops the run; the journal says what is left to do
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # no half-written file left behind
        raise cannot_write(target, exc) from None
    return OutputFile(
        file=f"{shard}/{name}",
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        content_type=ctype,
        bytes=len(data),
    )
