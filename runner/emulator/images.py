"""Loads a request's input image: a data: URI, a file this emulator hosts, or (only when remote
fetch is allowed) any other URL. Problems come back as fal-style 422 detail items."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from PIL import Image, UnidentifiedImageError

from ..datauri import is_data_uri, parse
from ..urls import is_loopback
from .state import EmulatorState

MAX_DOWNLOAD = 20 * 1024 * 1024
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=30)


class ImageInputError(Exception):
    """The input image could not be fetched or decoded; `item` is the 422 detail item."""

    def __init__(self, item: dict[str, Any]) -> None:
        super().__init__(item["msg"])
        self.item = item


def _error(kind: str, msg: str, url: str, field: str) -> ImageInputError:
    shown = url if len(url) <= 120 else url[:117] + "..."
    return ImageInputError(
        {
            "loc": ["body", field],
            "msg": msg,
            "type": kind,
            "input": shown,
            "url": f"https://docs.fal.ai/errors#{kind}",
        }
    )


def own_file_id(state: EmulatorState, url: str) -> str | None:
    """The file id when `url` points at this emulator's /files/ (any loopback name)."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    if (
        parts.scheme in ("http", "https")
        and is_loopback(parts.hostname)
        and parts.port in state.own_ports
        and len(segments) >= 3
        and segments[1] == "files"
    ):
        return segments[2]
    return None


async def fetch_bytes(state: EmulatorState, url: str, field: str = "image_url") -> bytes:
    if is_data_uri(url):
        inline = parse(url)
        if inline is None:
            raise _error("image_load_error", "Invalid data URI", url, field)
        try:
            return inline.content()
        except ValueError as exc:
            raise _error("image_load_error", "Invalid base64 in data URI", url, field) from exc
    file_id = own_file_id(state, url)
    if file_id is not None:
        stored = state.files.get(file_id)
        if stored is None:
            raise _error("file_download_error", "File not found", url, field)
        return stored.data
    if urlsplit(url).scheme not in ("http", "https"):
        raise _error("file_download_error", "Unsupported URL scheme", url, field)
    if not state.settings.allow_remote_fetch or state.session is None:
        raise _error(
            "file_download_error",
            "Remote URLs are not fetched by the emulator (remote fetch is off)",
            url,
            field,
        )
    try:
        async with state.session.get(url, timeout=DOWNLOAD_TIMEOUT) as resp:
            if resp.status != 200:
                raise _error(
                    "file_download_error",
                    f"Failed to download the file (HTTP {resp.status})",
                    url,
                    field,
                )
            data = await resp.content.read(MAX_DOWNLOAD + 1)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise _error(
            "file_download_error", f"Failed to download the file: {exc}", url, field
        ) from exc
    if len(data) > MAX_DOWNLOAD:
        raise _error("file_too_large", "File is too large", url, field)
    return data


def decode_image(data: bytes, url: str, field: str = "image_url") -> Image.Image:
    """Decoded and fully loaded (safe to hand to another thread)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise _error("image_load_error", "Failed to load the image", url, field) from exc
    return image
