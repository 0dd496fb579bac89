"""Turns a Request's local files into what the server can read: a data: URI for small files,
an upload to fal storage for large ones. Gives the body to send; caches per file content.
Inline data (journaled as its sha256) is sent as written, and kept once in OUT/inputs/ so
the run's inputs can be found again (the manifest never holds image bytes). A local file's
bytes must hash to the request's `sha256:<hex>` (what was validated), else InputChanged
names the file."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import mimetypes
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..datauri import parse
from ..errors import InputChanged
from ..models import Request
from .falapi import FalClient

DATA_URI_MAX_BYTES = 2 * 1024 * 1024  # larger files are uploaded (fal: data URIs for small ones)
_CACHE_SIZE = 64


class Attachments:
    def __init__(self, client: FalClient, inputs_dir: Path | None = None) -> None:
        self._client = client
        self._cache: OrderedDict[str, str] = OrderedDict()  # "sha256:<hex>" -> URI sent
        # One read (and upload) per file at a time: requests that need a file being read or
        # uploaded wait for that one instead of uploading the same bytes again.
        self._pending: dict[str, asyncio.Task[str]] = {}
        self._inputs_dir = inputs_dir

    async def body(self, request: Request) -> Mapping[str, Any]:
        """The request body as sent: each local file replaced by a data: URI or upload URL,
        and inline data (journaled as its sha256) by its data: URI."""
        if not request.files and not request.inline:
            return request.input
        body = {**request.input, **request.inline}
        if self._inputs_dir is not None:
            for name, uri in request.inline.items():
                ref = str(request.input[name])
                await asyncio.to_thread(keep_inline, self._inputs_dir, ref, uri)
        for name, path in request.files.items():
            body[name] = await self._uri(str(request.input[name]), path)
        return body

    async def _uri(self, ref: str, path: Path) -> str:
        if ref in self._cache:
            self._cache.move_to_end(ref)
            return self._cache[ref]
        task = self._pending.get(ref)
        if task is None:
            task = asyncio.create_task(self._make_uri(ref, path))
            self._pending[ref] = task
            task.add_done_callback(lambda _: self._pending.pop(ref, None))
        # shielded: one waiter's cancellation (Ctrl-C) must not cancel the others' upload
        return await asyncio.shield(task)

    async def _make_uri(self, ref: str, path: Path) -> str:
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


def keep_inline(folder: Path, ref: str, uri: str) -> None:
    """Write the content of a base64 data: URI once as folder/<sha256>.<ext> (atomically); a
    URI that is not base64 of a known image type is not kept."""
    parsed = parse(uri)
    if parsed is None or not parsed.is_base64 or not ref.startswith("sha256:"):
        return
    ext = mimetypes.guess_extension(parsed.media_type) or ""
    if not ext:
        return
    target = folder / f"{ref[len('sha256:') :]}{ext}"
    if target.exists():
        return
    try:
        data = parsed.content()
    except ValueError:
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError:  # only a convenience for export: the request is sent all the same
        tmp.unlink(missing_ok=True)
