"""`data:` URIs (RFC 2397), taken apart in one place: a URI in, its media type, whether its
payload is base64 and its content out. Local inputs, the journal's inline inputs, the plan's
size estimate, fal's outputs and the emulator's input images all read them here."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

SCHEME = "data:"


@dataclass(frozen=True)
class DataUri:
    media_type: str  # lower case, without parameters; "" when the URI names none
    is_base64: bool
    payload: str  # the text after the first comma, still encoded

    def content(self, strict: bool = True) -> bytes:
        """The decoded bytes; ValueError for a base64 payload that is not base64.
        `strict=False` skips characters outside the base64 alphabet (line breaks, say), as
        for an output already paid for."""
        if self.is_base64:
            return base64.b64decode(self.payload, validate=strict)
        return unquote_to_bytes(self.payload)


def is_data_uri(value: str) -> bool:
    """True for a value in the data: scheme (any case), well formed or not."""
    return value[: len(SCHEME)].lower() == SCHEME


def parse(uri: str) -> DataUri | None:
    """The parts of a data: URI; None for any other value and for one without a comma."""
    if not is_data_uri(uri):
        return None
    head, comma, payload = uri.partition(",")
    if not comma:
        return None
    media_type, *params = head[len(SCHEME) :].split(";")
    is_base64 = bool(params) and params[-1].strip().lower() == "base64"
    return DataUri(media_type.strip().lower(), is_base64, payload)
