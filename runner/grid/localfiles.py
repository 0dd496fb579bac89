"""Local inputs of file fields: a field value in, its journaled "sha256:<hex>" reference and
what is sent out (a local file's absolute path, or a data: URI itself); None for http(s) URLs,
which the server fetches."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..datauri import is_data_uri, parse
from ..keys import file_sha256, is_remote

__all__ = ["LocalFiles"]


class LocalFiles:
    """File field values -> (journaled "sha256:<hex>", what is sent): a local file's absolute
    path, or a data: URI itself (hashed by its decoded content, so the manifest never holds
    image bytes); None for http(s) URLs.

    Remembers answers for one expansion, so a million rows naming one image stat it once."""

    def __init__(self, base_dir: Path) -> None:
        self._base = base_dir
        self._known: dict[str, tuple[str, Path | str] | None] = {}

    def resolve(self, value: Any) -> tuple[str, Path | str] | None:
        """Raises OSError when a local file cannot be read."""
        if not isinstance(value, str):
            return None  # not a path: the schema check reports it
        if value in self._known:
            return self._known[value]
        found: tuple[str, Path | str] | None = None
        if is_data_uri(value):
            found = ("sha256:" + hashlib.sha256(_data_bytes(value)).hexdigest(), value)
        elif not is_remote(value):
            path = Path(os.path.abspath(self._base / value))
            found = ("sha256:" + file_sha256(path), path)
        if len(self._known) >= 4096:  # bounded: a files axis of 100k images must not pile up
            self._known.clear()
        self._known[value] = found
        return found


def _data_bytes(uri: str) -> bytes:
    """The content of a data: URI; a malformed one is hashed as written (the server will
    refuse it, and says why)."""
    parsed = parse(uri)
    try:
        return uri.encode() if parsed is None else parsed.content()
    except ValueError:
        return uri.encode()
