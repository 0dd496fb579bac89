"""Request identity: an endpoint id and a final request body in, a short stable key out.

Also the canonical JSON every stage hashes with, cached content hashes of local files, and a
compact set of seen keys for de-duplicating a million requests without a million objects.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import os
import struct
from array import array
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from .datauri import is_data_uri

KEY_HEX = 16  # 64 bits: collisions stay negligible well past millions of requests


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
# JSONEncoder.encode builds a new C encoder on every call, half the cost of hashing a row; this
# one is built once, with the same arguments encode() passes (tests check both agree).
_make = getattr(json.encoder, "c_make_encoder", None)  # None outside CPython
_C_ENCODE: Callable[[Any, int], Sequence[str]] | None = (
    _make({}, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", True, False, False)
    if _make is not None
    else None
)


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept, NaN refused (not JSON)."""
    if _C_ENCODE is None or not isinstance(value, dict):
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def canonical(value: Any) -> Any:
    """One value per number: an integer-valued float is the int (5.0 and 5e0 are 5), inside
    lists and mappings too. Sources apply it, so templates, keys and bodies all see one spelling,
    and integer fields are sent as JSON integers."""
    if type(value) is float:
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    return value


# The key text is canonical_json({"endpoint": id, "input": body}), spelt here once, in pieces:
# a head, then one fragment per body field in name order, then "}}". Grid expansion keeps the
# fragments of each field value it has worked out and joins a row's, so a million rows need no
# body dict and no JSON encoding each; request_key joins them the same way (tests check both
# against canonical_json).


def fragment(name: str, value: Any) -> str:
    """One body field as the key text spells it: ',"name":<canonical JSON of value>'. Raises
    TypeError or ValueError for a value that is no JSON (NaN, an object)."""
    return speller(name)(value)


_STRING = json.encoder.encode_basestring  # what canonical_json spells a str as (UTF-8 kept)


@lru_cache(maxsize=1024)
def speller(name: str) -> Callable[[Any], str]:
    """fragment(name, value) for one field, as a function of the value (a million values of a
    field are spelt by one function)."""
    label = "," + canonical_json(name) + ":"

    def spell(value: Any) -> str:
        if type(value) is str:  # most values: straight through the C encoder canonical_json uses
            return label + _STRING(value)
        return label + canonical_json(value)

    return spell


def key_head(endpoint_id: str) -> str:
    """The key text up to the body's first field: '{"endpoint":<id>,"input":{'."""
    return '{"endpoint":' + canonical_json(endpoint_id) + ',"input":{'


def key_text(head: str, fragments: str) -> str:
    """The key text of the request whose key_head is `head` and whose body's fragments,
    concatenated in name order, are `fragments`."""
    return head + fragments[1:] + "}}"  # the first fragment's comma opens the object: dropped


def text_key(text: str) -> int:
    """The key of a key text, as a 64-bit number: the first 8 bytes of the sha256 of the text
    in UTF-8. UnicodeEncodeError for text that is no UTF-8 (a lone surrogate)."""
    key: int = _FIRST_8(_SHA256(text.encode("utf-8")).digest())[0]
    return key


_SHA256 = hashlib.sha256
_FIRST_8 = struct.Struct(">Q").unpack_from  # the digest's first 8 bytes, big-endian


def body_key(head: str, fragments: str) -> int:
    """The key, as a 64-bit number, of the request whose key_head is `head` and whose body's
    fragments, concatenated in name order, are `fragments`."""
    return text_key(key_text(head, fragments))


def hex_key(key: int) -> str:
    """A 64-bit key as the 16 hex digits the journal and file names use."""
    return f"{key:0{KEY_HEX}x}"


def request_key(endpoint_id: str, body: Mapping[str, Any]) -> str:
    """The key of a request; `body` has local files already replaced by "sha256:<hex>"."""
    fragments = "".join(fragment(name, body[name]) for name in sorted(body))
    return hex_key(body_key(key_head(endpoint_id), fragments))


def is_url(value: object) -> bool:
    """True for an http(s) URL: an input the server fetches itself (its size is unknown here)."""
    return isinstance(value, str) and value[:8].lower().startswith(("http://", "https://"))


def is_remote(value: object) -> bool:
    """True for values the server fetches or decodes itself (URLs, data: URIs): no local file."""
    return isinstance(value, str) and (is_url(value) or is_data_uri(value))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content; OSError if it cannot be read.

    Keyed by size and mtime as well as the path, so an edited image gets a new hash (and its
    requests a new identity) while a million rows naming one image read it once.
    """
    st = os.stat(path)
    return _hash_file(os.fspath(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4096)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class KeySet:
    """A set of 64-bit keys in one flat array (open addressing, linear probing).

    A Python set of a million ints is a million objects (~60 MB); this is 16 MB and one object.
    """

    def __init__(self) -> None:
        self._slots = array("Q", [0]) * 1024
        self._mask = 1023
        self._size = 0
        self._has_zero = False  # 0 marks an empty slot, so the key 0 is kept aside

    def __len__(self) -> int:
        return self._size + self._has_zero

    def add(self, key: str) -> bool:
        """Add a hex key; True if it was new."""
        value = int(key, 16)
        if value == 0:
            new = not self._has_zero
            self._has_zero = True
            return new
        if self._insert(value):
            self._size += 1
            if 2 * self._size > self._mask:  # keep the load under 1/2: probes stay short
                self._grow()
            return True
        return False

    def __contains__(self, key: str) -> bool:
        value = int(key, 16)
        if value == 0:
            return self._has_zero
        slots, mask = self._slots, self._mask
        i = (value ^ (value >> 29)) & mask
        while slots[i]:
            if slots[i] == value:
                return True
            i = (i + 1) & mask
        return False

    def _insert(self, value: int) -> bool:
        slots, mask = self._slots, self._mask
        i = (value ^ (value >> 29)) & mask
        while slots[i]:
            if slots[i] == value:
                return False
            i = (i + 1) & mask
        slots[i] = value
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", [0]) * (2 * len(old))
        self._mask = 2 * len(old) - 1
        for value in old:
            if value:
                self._insert(value)
