"""Request identity: canonical JSON, keys, local-file hashing, the compact key set."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.keys import (
    KeySet,
    body_key,
    canonical_json,
    file_sha256,
    fragment,
    hex_key,
    is_remote,
    key_head,
    request_key,
)

EP = "fal-ai/flux-1/dev/image-to-image"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_canonical_json_matches_the_reference_spelling(value: dict[str, Any]) -> None:
    reference = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == reference
    assert canonical_json({"wrapped": value}) == json.dumps(
        {"wrapped": value}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def test_canonical_json_keeps_unicode_and_refuses_nan() -> None:
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_key_is_16_hex_of_sha256_of_endpoint_and_body() -> None:
    body = {"prompt": "a cat", "seed": 1}
    text = '{"endpoint":"' + EP + '","input":{"prompt":"a cat","seed":1}}'
    assert request_key(EP, body) == hashlib.sha256(text.encode()).hexdigest()[:16]


@given(st.dictionaries(st.text(), json_values, max_size=6), st.text())
def test_the_key_joins_field_fragments_into_the_canonical_json_of_the_request(
    body: dict[str, Any], endpoint: str
) -> None:
    """The one spelling of a key: the fragments of a body's fields, joined in name order, hash
    to what canonical_json of the whole request hashes to, byte for byte."""
    text = canonical_json({"endpoint": endpoint, "input": body})
    expected = hashlib.sha256(text.encode()).hexdigest()[:16]
    fragments = "".join(fragment(name, body[name]) for name in sorted(body))
    assert hex_key(body_key(key_head(endpoint), fragments)) == expected
    assert request_key(endpoint, body) == expected


def test_a_value_that_is_no_json_or_no_utf8_has_no_key() -> None:
    with pytest.raises(ValueError):
        fragment("strength", float("nan"))
    with pytest.raises(UnicodeEncodeError):
        request_key(EP, {"prompt": "bad \ud800"})


def test_key_ignores_key_order_but_not_values_or_endpoint() -> None:
    a = request_key(EP, {"prompt": "x", "seed": 1})
    assert a == request_key(EP, {"seed": 1, "prompt": "x"})
    assert a != request_key(EP, {"prompt": "x", "seed": 2})
    assert a != request_key("other/endpoint", {"prompt": "x", "seed": 1})


@pytest.mark.parametrize(
    ("value", "remote"),
    [
        ("https://example.com/a.png", True),
        ("HTTP://example.com/a.png", True),
        ("data:image/png;base64,AAAA", True),
        ("images/a.png", False),
        ("/abs/a.png", False),
        ("httpx/a.png", False),
        (3, False),
        (None, False),
    ],
)
def test_is_remote(value: object, remote: bool) -> None:
    assert is_remote(value) is remote


def test_file_hash_is_content_hash_and_follows_edits(tmp_path: Path) -> None:
    f = tmp_path / "a.png"
    f.write_bytes(b"one")
    assert file_sha256(f) == hashlib.sha256(b"one").hexdigest()
    f.write_bytes(b"two!")  # new size: a fresh hash, not the cached one
    assert file_sha256(f) == hashlib.sha256(b"two!").hexdigest()
    f.write_bytes(b"six!")
    os.utime(f, ns=(1, 10**18))  # same size, new mtime
    assert file_sha256(f) == hashlib.sha256(b"six!").hexdigest()
    with pytest.raises(OSError):
        file_sha256(tmp_path / "missing.png")


hex_keys = st.integers(min_value=0, max_value=2**64 - 1).map(lambda n: f"{n:016x}")


@given(st.lists(hex_keys | st.sampled_from(["0" * 16, "f" * 16, "0" * 15 + "1"]), max_size=3000))
def test_key_set_behaves_like_a_set(keys: list[str]) -> None:
    seen = KeySet()
    reference: set[str] = set()
    for key in keys:
        assert seen.add(key) is (key not in reference)
        reference.add(key)
        assert key in seen
    assert len(seen) == len(reference)
    assert ("1" * 16 in seen) is ("1" * 16 in reference)
