"""data: URIs (RFC 2397) are read one way everywhere: the scheme and `;base64` in any case,
base64 or percent-encoded payloads, and a malformed one told apart from a valid one."""

from __future__ import annotations

import base64
import hashlib

import pytest

from runner.datauri import DataUri, is_data_uri, parse
from runner.emulator.images import fetch_bytes
from runner.folder.integrity import decode_data_uri
from runner.grid.localfiles import LocalFiles

from .conftest import png_bytes

PNG = png_bytes()
B64 = base64.b64encode(PNG).decode()


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        (f"data:image/png;base64,{B64}", DataUri("image/png", True, B64)),
        (f"DATA:Image/PNG;BASE64,{B64}", DataUri("image/png", True, B64)),
        ("data:,a%20b", DataUri("", False, "a%20b")),
        ("data:text/plain;charset=utf-8,hi", DataUri("text/plain", False, "hi")),
        ("data:base64,aGk=", DataUri("base64", False, "aGk=")),  # a media type, not the flag
    ],
)
def test_parse(uri: str, parts: DataUri) -> None:
    assert parse(uri) == parts


def test_what_is_not_a_data_uri() -> None:
    assert parse("data:image/png;base64") is None  # no comma: no payload
    assert parse("https://example.com/a.png") is None
    assert not is_data_uri("dat:") and is_data_uri("Data:x")


def test_content() -> None:
    assert parse("data:,a%20b").content() == b"a b"  # type: ignore[union-attr]
    broken = parse("data:;base64,aGk=\n")
    assert broken is not None
    with pytest.raises(ValueError):
        broken.content()
    assert broken.content(strict=False) == b"hi"


def test_every_reader_takes_a_data_uri_whatever_the_case_of_its_scheme(tmp_path) -> None:
    uri = f"DATA:image/png;BASE64,{B64}"
    ref, sent = LocalFiles(tmp_path).resolve(uri)  # type: ignore[misc]
    assert ref == "sha256:" + hashlib.sha256(PNG).hexdigest() and sent == uri
    decoded = decode_data_uri(uri)  # report and export (older journals)
    assert decoded is not None and (decoded.data, decoded.ext) == (PNG, "png")


async def test_the_emulator_reads_a_data_uri_whatever_the_case_of_its_scheme() -> None:
    # the state is not consulted for a data: URI
    assert await fetch_bytes(None, f"Data:image/png;base64,{B64}") == PNG  # type: ignore[arg-type]
