"""Strict {name} templates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.errors import GridError
from runner.grid.templates import TemplateError, has_template, literal_hint, parse, render


def test_renders_names_from_the_row() -> None:
    row = {"animal": "cat", "style": "oil"}
    assert render("a {animal} dressed as a wizard, {style}", row) == (
        "a cat dressed as a wizard, oil"
    )


def test_double_braces_are_literal() -> None:
    assert render("{{not}} a {x}}}", {"x": 1}) == "{not} a 1}"
    assert parse("{{x}}").names == frozenset()


def test_values_render_as_they_read_in_the_spec() -> None:
    row = {"f": 0.7, "i": 3, "b": True, "n": None, "m": {"k": 1}}
    assert render("{f} {i} {b} {n} {m}", row) == '0.7 3 true null {"k": 1}'


def test_undefined_name_is_an_error_with_a_suggestion_and_the_defined_names() -> None:
    with pytest.raises(TemplateError) as e:
        render("a {animl}", {"animal": "cat", "seed": 1}, "prompt")
    assert e.value.message == (
        "undefined template variable 'animl' (did you mean 'animal'?); defined: animal, seed"
    )
    assert e.value.key == "prompt"


def test_the_literal_brace_hint_writes_what_renders_the_braces_as_text() -> None:
    hint = literal_hint("red")
    assert hint == "HINT: write {{red}} for literal braces"
    assert render(f"a {hint.split()[2]} cube", {}) == "a {red} cube"


def test_templates_never_see_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_KEY", "secret")
    with pytest.raises(GridError, match="undefined template variable 'FAL_KEY'"):
        render("{FAL_KEY}", {})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{a.b}", "attribute and index access"),
        ("{a[0]}", "attribute and index access"),
        ("{a!r}", "only plain {name}"),
        ("{a:>5}", "only plain {name}"),
        ("{}", "empty {}"),
        ("{0}", "plain identifier"),
        ("a {b", "unmatched brace"),
        ("a } b", "unmatched brace"),
    ],
)
def test_bad_templates_are_rejected_clearly(text: str, fragment: str) -> None:
    with pytest.raises(GridError) as e:
        parse(text, ("defaults", "prompt"))
    assert fragment in e.value.message
    assert e.value.path == ("defaults", "prompt")


def test_parse_is_cached() -> None:
    assert parse("x {cached_name}") is parse("x {cached_name}")


def test_has_template() -> None:
    assert has_template("a {b}") and has_template("}")
    assert not has_template("plain") and not has_template(3)


@given(st.text())
def test_escaped_text_renders_to_itself(text: str) -> None:
    escaped = text.replace("{", "{{").replace("}", "}}")
    assert render(escaped, {}) == text


@given(
    st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True),
    st.text().filter(lambda v: "{" not in v and "}" not in v),
    st.text(),
)
def test_a_name_renders_its_value(name: str, value: str, around: str) -> None:
    literal = around.replace("{", "{{").replace("}", "}}")
    assert render(f"{literal}{{{name}}}{literal}", {name: value}) == f"{around}{value}{around}"


# --- a variable's value is a template too ------------------------------------------------------


def test_variables_render_recursively() -> None:
    row = {"scene": "{who} at {when}", "who": "a {animal}", "animal": "cat", "when": "night"}
    assert render("{scene}!", row, "prompt") == "a cat at night!"


def test_braces_escape_alike_in_variables() -> None:
    assert render("{v}", {"v": "{{literal}} {x}", "x": 1}, "prompt") == "{literal} 1"


def test_literal_names_are_not_rendered() -> None:
    row = {"file": "img_{1}.png"}
    assert render("{file}", row, "prompt", literal={"file"}) == "img_{1}.png"


@pytest.mark.parametrize(
    ("row", "cycle", "key"),
    [
        ({"a": "{b}", "b": "{a}"}, "template cycle: a → b → a", "b"),
        ({"a": "x {a}"}, "template cycle: a → a", "a"),
        ({"prompt": "{prompt}"}, "template cycle: prompt → prompt", "prompt"),
    ],
)
def test_a_cycle_is_an_error_naming_it(row: dict[str, str], cycle: str, key: str) -> None:
    with pytest.raises(TemplateError) as e:
        render("{a}" if "a" in row else "{prompt}", row, "prompt")
    assert e.value.message == cycle and e.value.key == key


def test_an_undefined_name_inside_a_variable_names_that_variable() -> None:
    with pytest.raises(TemplateError) as e:
        render("{scene}", {"scene": "{who}"}, "prompt")
    assert "undefined template variable 'who'" in e.value.message and e.value.key == "scene"


_names = st.sampled_from(["a", "b", "c", "d", "e"])
_plain = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=5)


@given(st.dictionaries(_names, st.lists(st.one_of(_plain, _names.map("{{{}}}".format)))))
def test_a_render_leaves_no_unrendered_name(chains: dict[str, list[str]]) -> None:
    """Whatever the variables reference (chains, cycles, undefined names), a render either
    fails with a TemplateError or leaves no `{name}` behind."""
    row = {name: "".join(parts) for name, parts in chains.items()}
    for name in row:
        try:
            out = render("{" + name + "}", row, "prompt")
        except TemplateError:
            continue
        assert "{" not in out and "}" not in out
