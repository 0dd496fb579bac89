"""Turns a Request's local files into what the server can read: a data: URI for small files,
an upload to fal storage for large ones. Gives the body to send; caches per file content.
The bytes sent must hash to the request's `sha256:<hex>` (what was validated), else
InputChanged names the file."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import mimetypes
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputChanged
from .falapi import FalClient
from .models import Request

DATA_URI_MAX_BYTES = 2 * 1024 * 1024  # larger files are uploaded (fal: data URIs for small ones)
_CACHE_SIZE = 64


class Attachments:
    def __init__(self, client: FalClient) -> None:
        self._client = client
        self._cache: OrderedDict[str, str] = OrderedDict()  # "sha256:<hex>" -> URI sent

    async def body(self, request: Request) -> Mapping[str, Any]:
        """The request body as sent: each local file replaced by a data: URI or upload URL."""
        if not request.files:
            return request.input
        body = dict(request.input)
        for name, path in request.files.items():
            body[name] = await self._uri(str(request.input[name]), path)
        return body

    async def _uri(self, ref: str, path: Path) -> str:
        if ref in self._cache:
            self._cache.move_to_end(ref)
            return self._cache[ref]
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise InputChanged(
                f"{path} cannot be read any more ({exc.strerror or exc}): it changed "
                "since validation"
            ) from None
        if ref.startswith("sha256:") and hashlib.sha256(data).hexdigest() != ref[7:]:
            raise InputChanged(f"{path} changed during the run (its sha256 differs)")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if len(data) <= DATA_URI_MAX_BYTES:
            uri = f"data:{ctype};base64,{base64.b64encode(data).decode()}"
        else:
            uri = await self._client.upload(data, ctype, path.name)
        self._cache[ref] = uri
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return uri
