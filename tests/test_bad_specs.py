"""The broken-spec corpus: each file in data/bad_specs gives exactly the errors listed in
expected.txt; and no input at all makes load_spec or check raise anything but SpecError."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import SpecError, SpecErrors
from runner.spec.check import check
from runner.spec.load import load_spec

CORPUS = Path(__file__).parent / "data" / "bad_specs"


def _expected() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for line in (CORPUS / "expected.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, rest = line.partition(": ")
            found[name].append(rest.replace("{dir}", str(CORPUS.resolve())))
    return found


EXPECTED = _expected()
SPECS = sorted(p.name for p in CORPUS.glob("*.yaml"))


def test_corpus_is_complete() -> None:
    assert len(SPECS) >= 40
    assert sorted(EXPECTED) == SPECS


@pytest.mark.parametrize("name", SPECS)
def test_bad_spec(name: str) -> None:
    path = CORPUS / name
    with pytest.raises(SpecErrors) as info:
        check(path)
    got = [f"{e.line}:{e.col}: {e.message}" for e in info.value.errors]
    assert got == EXPECTED[name]
    for e in info.value.errors:
        assert e.file == str(path)
        assert "\n" not in e.message and not e.message[:1].isupper()


def test_empty_and_unreadable_files_point_at_1_1(tmp_path: Path) -> None:
    for name, data in [("blank.yaml", b"\n\n  \n"), ("nul.yaml", b"version: 1\x00\n")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SpecErrors) as info:
            load_spec(tmp_path / name)
        assert (info.value.line, info.value.col) == (1, 1)
    with pytest.raises(SpecErrors, match="file not found"):
        load_spec(tmp_path / "nowhere.yaml")


# --- fuzzing: whatever the bytes, the only way out is a SpecError (or a valid spec)

_KEYS = [
    "version",
    "name",
    "endpoint",
    "backend",
    "output",
    "defaults",
    "matrix",
    "exclude",
    "include",
    "sample",
    "limits",
    "execution",
    "n",
    "seed",
    "max_requests",
    "concurrency",
    "rate",
    "retries",
    "timeout",
    "mode",
    "range",
    "step",
    "files",
    "lines",
    "csv",
    "jsonl",
    "prompt",
    "image_url",
    "strength",
    "guidance_scale",
    "num_inference_steps",
    "animal",
]
_scalars = (
    st.integers(-30, 30)
    | st.floats(-3, 30, allow_nan=False)
    | st.booleans()
    | st.none()
    | st.sampled_from(
        [
            "fal-ai/flux-1/dev/image-to-image",
            "local",
            "fal",
            "queue",
            "a {animal}",
            "{",
            "images/*.png",
            "x.txt",
            "cat",
            "",
        ]
    )
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)
_specs = st.fixed_dictionaries(
    {
        "version": st.sampled_from([1, 1, 1, 2, "1"]),
        "endpoint": st.sampled_from(["fal-ai/flux-1/dev/image-to-image", "nope"]),
    },
    optional={k: _values for k in _KEYS[:12] if k not in ("version", "endpoint")},
)
_fragments = st.lists(
    st.sampled_from(
        [
            "version: 1\n",
            "endpoint: fal-ai/flux-1/dev/image-to-image\n",
            "matrix:\n",
            "  seed: [1, 2]\n",
            "defaults:\n",
            "  prompt: a {x}\n",
            "- ",
            ": ",
            "{",
            "}",
            "[",
            "]",
            "&a ",
            "*a ",
            "!!python/object:os.system ",
            "\t",
            "'",
            '"',
            "\n",
            "  ",
            "---\n",
            "<<: *a\n",
            "!!binary ",
            "yes",
            "1e999",
            "0x1F",
            "key: ",
        ]
    ),
    max_size=30,
).map("".join)
_fuzz = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def _only_spec_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(data)
        for step in (load_spec, check):
            try:
                step(path)
            except SpecError as exc:
                assert exc.message and "\n" not in exc.message


@_fuzz
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    _only_spec_errors(text.encode("utf-8", "surrogatepass"))


@_fuzz
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    _only_spec_errors(data)


@_fuzz
@given(_fragments)
def test_yaml_looking_text(text: str) -> None:
    _only_spec_errors(text.encode("utf-8"))


@_fuzz
@given(_specs)
def test_random_specs(spec: dict[str, object]) -> None:
    _only_spec_errors(yaml.safe_dump(spec, sort_keys=False).encode("utf-8"))
