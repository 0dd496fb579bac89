"""yamlsource: safe loading, typed scalars, string keys, locations, and located YAML errors."""

from __future__ import annotations

import pytest

from runner.models import Location
from runner.spec.yamlsource import YamlError, load_yaml

DOC = """\
# a comment
version: 1
defaults:
  prompt: "a cat"
  strength: 0.5
matrix:
  seed: [1, 2]
  look:
    - {guidance_scale: 2.5, steps: 20}
    - guidance_scale: 5
"""


def test_values_and_types() -> None:
    data, _ = load_yaml(DOC)
    assert data == {
        "version": 1,
        "defaults": {"prompt": "a cat", "strength": 0.5},
        "matrix": {
            "seed": [1, 2],
            "look": [{"guidance_scale": 2.5, "steps": 20}, {"guidance_scale": 5}],
        },
    }
    assert type(data["version"]) is int and type(data["defaults"]["strength"]) is float


def test_locations_are_one_based_at_keys_and_items() -> None:
    _, locate = load_yaml(DOC)
    assert locate(("version",)) == Location(2, 1)
    assert locate(("defaults", "strength")) == Location(5, 3)
    assert locate(("matrix", "seed", 1)) == Location(7, 13)
    assert locate(("matrix", "look", 0, "steps")) == Location(9, 29)
    assert locate(("matrix", "look", 1)) == Location(10, 7)


def test_unknown_paths_fall_back_to_the_nearest_ancestor() -> None:
    _, locate = load_yaml(DOC)
    assert locate(("matrix", "seed", 7, "x")) == locate(("matrix", "seed"))
    assert locate(("nowhere",)) == locate(()) == Location(2, 1)
    assert ("matrix", "seed") in locate and ("matrix", "nope") not in locate


def test_plain_scalars_follow_yaml_1_1_but_keys_stay_text() -> None:
    data, _ = load_yaml("on: true\n1: null\nx: 0x10\ny: 1_000\nz: 2024-05-01\nw: '007'\n")
    assert data == {"on": True, "1": None, "x": 16, "y": 1000, "z": "2024-05-01", "w": "007"}


def test_merge_keys_and_aliases() -> None:
    data, _ = load_yaml("base: &b {steps: 20}\nrow:\n  <<: *b\n  seed: 1\nagain: *b\n")
    assert data["row"] == {"steps": 20, "seed": 1} and data["again"] == {"steps": 20}


def test_empty_document_is_none() -> None:
    assert load_yaml("# only a comment\n")[0] is None
    assert load_yaml("")[0] is None


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", (3, 1), "duplicate key 'a' (first at line 1)"),
        ("x: !!python/object:os.system {}\n", (1, 4), "python object tags are not allowed"),
        ("x: !!python/name:os.system\n", (1, 4), "python object tags are not allowed"),
        ("x: !custom 3\n", (1, 4), "unsupported YAML tag '!custom'"),
        ("x: !!binary aGk=\n", (1, 4), "unsupported YAML tag '!!binary'"),
        ("x: [1, 2\n", (2, 1), "invalid YAML"),
        ("a:\n  b: 1\n c: 2\n", (3, 2), "invalid YAML"),
        ("x: yes\n", (1, 4), "ambiguous value 'yes'"),
        ("x: .inf\n", (1, 4), "not a finite number"),
        # YAML 1.1 reads these as numbers nobody meant: 12:30 is 750 (base 60), 010 is 8
        ("when: [9:05, 12:30]\n", (1, 8), "'9:05' is read by YAML 1.1 as the number 545"),
        ("x: 1:30.5\n", (1, 4), "'1:30.5' is read by YAML 1.1 as the number 90.5"),
        ("seed: 010\n", (1, 7), "'010' is read by YAML 1.1 as the number 8"),
        ("seed: -0_17\n", (1, 7), "'-0_17' is read by YAML 1.1 as the number -15"),
        ("? [a]\n: 1\n", (1, 3), "mapping key must be a plain name"),
        ("x: &a [*a]\n", (1, 4), "alias refers to the node that contains it"),
        ("x: \x07\n", (1, 4), "control character U+0007"),
    ],
)
def test_located_errors(text: str, where: tuple[int, int], message: str) -> None:
    with pytest.raises(YamlError) as info:
        load_yaml(text)
    assert (info.value.line, info.value.col) == where
    assert message in info.value.message


def test_quoted_yes_is_a_string() -> None:
    assert load_yaml("x: 'yes'\ny: \"no\"\n")[0] == {"x": "yes", "y": "no"}


def test_quoted_times_and_zero_padded_numbers_stay_text_and_plain_numbers_stay_numbers() -> None:
    data, _ = load_yaml("a: '12:30'\nb: \"010\"\nc: 0\nd: 0.5\ne: 10\nf: -0\ng: 0.05\n")
    assert data == {"a": "12:30", "b": "010", "c": 0, "d": 0.5, "e": 10, "f": 0, "g": 0.05}


def test_deep_nesting_and_alias_bombs_are_errors_not_crashes() -> None:
    with pytest.raises(YamlError):
        load_yaml("[" * 5000 + "]" * 5000)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with pytest.raises(YamlError, match="too large"):
        load_yaml(bomb)


# --- merge keys, tags, numbers -----------------------------------------------------------------


def test_a_merge_key_then_an_overriding_key_is_accepted() -> None:
    text = (
        "base: &b {seed: 1, strength: 0.5}\n"
        "other: &o {seed: 9, steps: 3}\n"
        "row:\n  <<: [*b, *o]\n  strength: 0.9\n"
    )
    data, locate = load_yaml(text)
    assert data["row"] == {"seed": 1, "steps": 3, "strength": 0.9}  # written key wins, then *b
    assert list(data["row"]) == ["seed", "steps", "strength"]
    assert (locate(("row", "strength")).line, locate(("row", "seed")).line) == (5, 1)
    data, _ = load_yaml("a: &a {x: 1}\nb: &b\n  <<: *a\n  y: 2\nc:\n  <<: *b\n  x: 3\n")
    assert data["c"] == {"x": 3, "y": 2}


def test_a_key_written_twice_next_to_a_merge_stays_an_error() -> None:
    with pytest.raises(YamlError, match="duplicate key 'seed' \\(first at line 3\\)"):
        load_yaml("base: &b {seed: 1}\nrow:\n  seed: 2\n  <<: *b\n  seed: 3\n")


@pytest.mark.parametrize("text", ["x: !!int '5'\n", "x: !!str 5\n", "x: ! 5\n", "x: !!float 1\n"])
def test_no_tags_at_all(text: str) -> None:
    with pytest.raises(YamlError, match="unsupported YAML tag") as e:
        load_yaml(text)
    assert (e.value.line, e.value.col) == (1, 4)


def test_exponent_numbers_are_numbers() -> None:
    data, _ = load_yaml("a: 5e0\nb: 1e-3\nc: -2E+2\nd: '5e0'\ne: 1.5e3\n")
    assert data == {"a": 5.0, "b": 0.001, "c": -200.0, "d": "5e0", "e": 1500.0}
