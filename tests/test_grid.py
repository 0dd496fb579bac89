"""Grid expansion: the contract's pipeline, request identity, errors before the first request."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import subprocess
import sys
from array import array
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import example as also_try
from hypothesis import strategies as st

from runner.endpoints import Endpoint, get_endpoint
from runner.errors import GridError
from runner.execution.inputguard import InputGuard
from runner.grid import expand as grid
from runner.grid import scan
from runner.grid.engine import Engine
from runner.grid.expand import Collapsed, axes, expand
from runner.grid.rowgrid import RowGrid
from runner.grid.shards import Shard
from runner.models import Request, Sample, Spec

_EP = get_endpoint("fal-ai/flux-1/dev/image-to-image")
assert _EP is not None
EP: Endpoint = _EP
URL = "https://example.com/koala.png"


def spec(
    base: Path = Path("/nonexistent"),
    matrix: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    **kw: Any,
) -> Spec:
    return Spec(
        path=base / "job.yaml",
        base_dir=base,
        sha256="0" * 64,
        version=1,
        name=None,
        endpoint=EP.id,
        backend="local",
        output=base / "out",
        defaults={"image_url": URL, "prompt": "p"} if defaults is None else defaults,
        matrix=matrix or {},
        **kw,
    )


def run(s: Spec) -> list[Request]:
    return list(expand(s, EP))


def grid_error(s: Spec) -> GridError:
    it = expand(s, EP)  # a generator: nothing is checked until the first next()
    with pytest.raises(GridError) as e:
        next(it)
    return e.value


# --- the contract's example --------------------------------------------------------------------


@pytest.fixture
def example(tmp_path: Path) -> Spec:
    (tmp_path / "images").mkdir()
    for name in ("a", "b"):
        (tmp_path / "images" / f"{name}.png").write_bytes(name.encode() * 10)
    (tmp_path / "images" / "koala.png").write_bytes(b"koala")
    (tmp_path / "styles.txt").write_text("oil painting\n\nwatercolor\n")
    return spec(
        tmp_path,
        defaults={"image_url": "images/koala.png", "num_inference_steps": 28},
        matrix={
            "prompt": ["a {animal} dressed as a wizard, {style}"],
            "animal": ["cat", "owl"],
            "style": {"lines": "styles.txt"},
            "strength": {"range": [0.5, 0.9], "step": 0.2},
            "seed": {"range": [0, 3]},
            "image_url": {"files": "images/[ab].png"},
            "look": [
                {"guidance_scale": 2.5, "num_inference_steps": 20},
                {"guidance_scale": 5.0, "num_inference_steps": 40},
            ],
        },
        exclude=({"animal": "owl", "strength": 0.9},),
        include=({"prompt": "a koala astronaut", "strength": 0.3, "seed": 7},),
    )


def test_contract_example(example: Spec) -> None:
    requests = run(example)
    product = 2 * 2 * 3 * 4 * 2 * 2
    excluded = 1 * 2 * 1 * 4 * 2 * 2
    assert len(requests) == product - excluded + 1
    assert axes(example) == [
        ("prompt", 1),
        ("animal", 2),
        ("style", 2),
        ("strength", 3),
        ("seed", 4),
        ("image_url", 2),
        ("look", 2),
    ]
    first = requests[0]
    a_sha = hashlib.sha256(b"a" * 10).hexdigest()
    assert first.input == {
        "image_url": f"sha256:{a_sha}",
        "num_inference_steps": 20,
        "prompt": "a cat dressed as a wizard, oil painting",
        "strength": 0.5,
        "seed": 0,
        "guidance_scale": 2.5,
    }
    assert first.files == {"image_url": example.base_dir / "images" / "a.png"}
    assert first.vars == {
        "prompt": "a {animal} dressed as a wizard, {style}",
        "animal": "cat",
        "style": "oil painting",
        "strength": 0.5,
        "seed": 0,
        "image_url": "images/a.png",
        "look": {"guidance_scale": 2.5, "num_inference_steps": 20},
    }
    assert first.origins == {
        "image_url": ("matrix", "image_url", "files"),
        "num_inference_steps": ("matrix", "look", 0, "num_inference_steps"),
        "prompt": ("matrix", "prompt", 0),
        "animal": ("matrix", "animal", 0),
        "style": ("matrix", "style", "lines"),
        "strength": ("matrix", "strength", "range"),
        "seed": ("matrix", "seed", "range"),
        "look": ("matrix", "look", 0),
        "guidance_scale": ("matrix", "look", 0, "guidance_scale"),
    }
    # the last axis varies fastest
    assert requests[1].vars["look"]["guidance_scale"] == 5.0
    assert requests[2].vars["image_url"] == "images/b.png"
    assert not any(r.vars.get("animal") == "owl" and r.input["strength"] == 0.9 for r in requests)
    last = requests[-1]  # the include row: appended, defaults fill the rest, never merged
    koala = hashlib.sha256(b"koala").hexdigest()
    assert last.input == {
        "image_url": f"sha256:{koala}",
        "num_inference_steps": 28,
        "prompt": "a koala astronaut",
        "strength": 0.3,
        "seed": 7,
    }
    assert last.vars == {"prompt": "a koala astronaut", "strength": 0.3, "seed": 7}
    assert last.origins["seed"] == ("include", 0, "seed")
    assert last.origins["image_url"] == ("defaults", "image_url")
    assert len({r.key for r in requests}) == len(requests)


# --- pipeline stages ---------------------------------------------------------------------------


def test_without_a_matrix_the_defaults_are_one_request() -> None:
    [r] = run(spec())
    assert r.input == {"image_url": URL, "prompt": "p"} and r.files == {}


def test_a_matrix_of_only_include_rows_runs_just_those() -> None:
    requests = run(spec(include=({"seed": 1}, {"seed": 2})))
    assert [r.input["seed"] for r in requests] == [1, 2]


def test_defaults_list_is_a_literal_and_variables_stay_out_of_the_body() -> None:
    s = spec(defaults={"image_url": URL, "prompt": "{who}", "who": "me", "tags": ["x", "y"]})
    [r] = run(s)
    assert r.input == {"image_url": URL, "prompt": "me"}
    assert r.vars == {"who": "me", "tags": ["x", "y"]}


def test_exclude_compares_raw_values_partially() -> None:
    s = spec(
        defaults={"image_url": URL},
        matrix={"prompt": ["a {x} {flag}", "b {x} {flag}"], "x": [1, 2], "flag": [True, False]},
        exclude=({"prompt": "a {x} {flag}", "x": 1}, {"flag": 1}),  # 1 is not true
    )
    got = [r.input["prompt"] for r in run(s)]
    assert got == ["a 2 true", "a 2 false", "b 1 true", "b 1 false", "b 2 true", "b 2 false"]


def test_exclude_on_object_axis_fields_or_the_whole_mapping() -> None:
    look = [{"guidance_scale": 2.5, "strength": 0.5}, {"guidance_scale": 5.0, "strength": 0.5}]
    s = spec(
        matrix={"seed": [1, 2], "look": look},
        exclude=({"seed": 1, "guidance_scale": 5.0}, {"seed": 2, "look": look[0]}),
    )
    got = [(r.input["seed"], r.input["guidance_scale"]) for r in run(s)]
    assert got == [(1, 2.5), (2, 5.0)]


def test_include_can_set_an_object_axis_by_name() -> None:
    look = [{"guidance_scale": 2.5, "strength": 0.5}]
    s = spec(matrix={"look": look}, include=({"look": {"guidance_scale": 9.0, "strength": 0.2}},))
    last = run(s)[-1]
    assert last.input["guidance_scale"] == 9.0 and last.input["strength"] == 0.2
    assert last.origins["guidance_scale"] == ("include", 0, "look", "guidance_scale")


def test_an_include_row_may_define_the_variables_its_own_templates_read() -> None:
    s = spec(
        matrix={"seed": [1]},
        include=(
            {"scene": "{who} alone", "who": "a heron", "prompt": "{scene}"},
            {"prompt": "{who} at dusk", "who": "an egret", "seed": 2},
        ),
    )
    _, nested, direct = run(s)
    assert nested.input["prompt"] == "a heron alone"
    assert nested.vars["scene"] == "a heron alone" and nested.vars["who"] == "a heron"
    assert nested.origins["who"] == ("include", 0, "who")
    assert direct.input["prompt"] == "an egret at dusk" and direct.vars["who"] == "an egret"


def test_a_variable_of_an_include_row_fills_a_template_from_the_defaults() -> None:
    s = spec(
        defaults={"image_url": URL, "prompt": "a {animal}"},
        include=({"animal": "cat"}, {"animal": "owl"}),
    )
    assert [(r.input["prompt"], r.vars["animal"]) for r in run(s)] == [
        ("a cat", "cat"),
        ("a owl", "owl"),
    ]


def test_a_variable_of_an_include_row_read_only_by_a_defaults_variable_is_read() -> None:
    # the defaults' `scene` renders into every row's vars, so it needs the row's `who`
    s = spec(
        defaults={"image_url": URL, "prompt": "{scene}", "scene": "{who} at dusk"},
        include=({"who": "a heron"}, {"prompt": "a fixed one", "who": "an egret"}),
    )
    heron, fixed = run(s)
    assert heron.input["prompt"] == "a heron at dusk"
    assert fixed.input["prompt"] == "a fixed one" and fixed.vars["scene"] == "an egret at dusk"


@pytest.mark.parametrize(
    ("include", "problems"),
    [
        (  # read by nothing in its row: a misspelt field, as before
            ({"prompt": "a heron", "seeed": 3},),
            [
                (
                    "include key 'seeed' names no axis, field or variable, and no template of "
                    "its row reads it (did you mean 'seed'?)",
                    0,
                )
            ],
        ),
        (  # read only by another variable that nothing reads
            ({"prompt": "p", "a": "{b}", "b": "x"},),
            [
                ("include key 'a' names no axis, field or variable", 0),
                ("include key 'b' names no axis, field or variable", 0),
            ],
        ),
        (  # a row's variable is its own: another row's template cannot read it
            ({"prompt": "{who}", "who": "x"}, {"prompt": "{who}", "seed": 2}),
            [("undefined template variable 'who'", 1)],
        ),
    ],
)
def test_an_include_key_that_no_template_of_its_row_reads_is_an_error(
    include: tuple[dict[str, Any], ...], problems: list[tuple[str, int]]
) -> None:
    e = grid_error(spec(matrix={"seed": [1]}, include=include))
    errors = getattr(e, "errors", [e])
    assert len(errors) == len(problems)
    for error, (message, row) in zip(errors, problems, strict=True):
        assert error.message.startswith(message), error.message
        assert error.path[:2] == ("include", row)


def test_identical_requests_collapse_and_the_first_stays() -> None:
    s = spec(matrix={"seed": [1, 2, 1]}, include=({"seed": 2, "prompt": "p"},))
    requests = run(s)
    assert [(r.input["seed"], r.origins["seed"]) for r in requests] == [
        (1, ("matrix", "seed", 0)),
        (2, ("matrix", "seed", 1)),
    ]


def test_templates_in_file_sources_render_and_fail_at_the_source(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("a {animal}\nan {animl}\n")
    s = spec(tmp_path, matrix={"prompt": {"lines": "p.txt"}, "animal": ["cat"]})
    e = grid_error(s)  # the file's templates are read when the source is scanned
    assert "'animl' (did you mean 'animal'?)" in e.message
    assert e.path == ("matrix", "prompt", "lines")
    (tmp_path / "p.txt").write_text("a {animal}\n")
    assert run(s)[0].input["prompt"] == "a cat"


def test_local_files_become_hashes_and_remote_ones_stay(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"png")
    s = spec(tmp_path, matrix={"image_url": ["a.png", URL, "data:image/png;base64,AA"]})
    a, b, c = run(s)
    assert a.input["image_url"] == "sha256:" + hashlib.sha256(b"png").hexdigest()
    assert a.files == {"image_url": tmp_path / "a.png"}
    assert b.input["image_url"] == URL and b.files == {}
    assert (
        c.input["image_url"] == "sha256:" + hashlib.sha256(b"data:image/png;base64,AA").hexdigest()
    )
    assert c.inline == {"image_url": "data:image/png;base64,AA"} and c.files == {}


def test_a_missing_image_points_at_its_node(tmp_path: Path) -> None:
    e = grid_error(spec(tmp_path, matrix={"image_url": ["gone.png"]}))
    assert "cannot read image_url file 'gone.png'" in e.message
    assert e.path == ("matrix", "image_url", 0)


def test_sample_is_a_reproducible_ordered_subset() -> None:
    base = spec(matrix={"seed": {"range": [0, 99]}})
    everything = [r.key for r in run(base)]
    one = [r.key for r in run(spec(matrix=base.matrix, sample=Sample(10, seed=1)))]
    again = [r.key for r in run(spec(matrix=base.matrix, sample=Sample(10, seed=1)))]
    other = [r.key for r in run(spec(matrix=base.matrix, sample=Sample(10, seed=2)))]
    assert one == again and len(one) == 10 and one != other
    assert [k for k in everything if k in set(one)] == one  # a subset, in run order
    assert [r.key for r in run(spec(matrix=base.matrix, sample=Sample(500)))] == everything


# --- errors, all before the first request ------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "fragment", "path"),
    [
        (
            {"defaults": {"image_url": URL, "prompt": "a {animl}"}, "matrix": {"animal": ["x"]}},
            "undefined template variable 'animl' (did you mean 'animal'?); defined: animal, "
            "image_url, prompt",
            ("defaults", "prompt"),
        ),
        (
            {"matrix": {"prompt": ["a {a.b}"]}},
            "attribute and index access",
            ("matrix", "prompt", 0),
        ),
        (
            {
                "defaults": {"image_url": URL, "prompt": "{x}"},
                "matrix": {"x": [1]},
                "include": ({"seed": 3},),
            },
            "undefined template variable 'x'",
            ("defaults", "prompt"),
        ),
        (
            {"include": ({"prompt": "{nope}"},)},
            "undefined template variable 'nope'",
            ("include", 0, "prompt"),
        ),
        (
            {"matrix": {"seed": [1]}, "exclude": ({"sede": 1},)},
            "exclude key 'sede' names no axis, field or variable (did you mean 'seed'?)",
            ("exclude", 0, "sede"),
        ),
        (
            {"matrix": {"seed": [1]}, "include": ({"animal": "x"},)},
            "include key 'animal' names no axis",
            ("include", 0, "animal"),
        ),
        (
            {"matrix": {"look": [{"seed": 1}], "seed": [2]}},
            "field 'seed' is set twice",
            ("matrix", "look"),
        ),
        (
            {"matrix": {"a": [{"seed": 1}], "b": [{"seed": 2}]}},
            "field 'seed' is set twice",
            ("matrix", "b"),
        ),
        (
            {"matrix": {"look": [{"seed": 1}]}, "include": ({"look": 3},)},
            "give it a mapping",
            ("include", 0, "look"),
        ),
        (
            {"defaults": {"image_url": URL, "prompt": "p", "strenght": 0.5}},
            "unknown field 'strenght' (did you mean 'strength'?)",
            ("defaults", "strenght"),
        ),
        (
            {"matrix": {"guidance_scal": [1.0]}},
            "axis 'guidance_scal' is no input of fal-ai/flux-1/dev/image-to-image and no "
            "template uses it, so it changes no request (did you mean 'guidance_scale'?); "
            "HINT: to repeat a request, sweep 'seed'",
            ("matrix", "guidance_scal"),
        ),
        (
            {"matrix": {"look": [{"num_inference_step": 20}]}},
            "field of axis 'look', 'num_inference_step' is no input",
            ("matrix", "look", 0, "num_inference_step"),
        ),
        ({"matrix": {"seed": {"range": [3, 0]}}}, "empty range", ("matrix", "seed", "range")),
    ],
)
def test_errors_come_before_the_first_request(
    kw: dict[str, Any], fragment: str, path: tuple[Any, ...]
) -> None:
    e = grid_error(spec(**kw))
    assert fragment in e.message
    assert e.path == path


def test_a_typo_used_by_a_template_is_a_variable() -> None:
    s = spec(defaults={"image_url": URL, "prompt": "{strenght}", "strenght": "high"})
    assert run(s)[0].input["prompt"] == "high"


def test_axes_reports_sizes_without_an_endpoint(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("a\nb\nc\n")
    s = spec(tmp_path, matrix={"style": {"lines": "s.txt"}, "seed": {"range": [1, 10]}})
    assert axes(s) == [("style", 3), ("seed", 10)]


# --- properties --------------------------------------------------------------------------------

small_axes = st.lists(
    st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True), min_size=1, max_size=3
)


def numbered(values_per_axis: list[list[int]]) -> dict[str, list[int]]:
    return {f"a{i}": vals for i, vals in enumerate(values_per_axis)}


def prompt_of(names: Any) -> str:
    return " ".join(f"{n}={{{n}}}" for n in sorted(names))


@given(small_axes, st.data())
def test_count_is_product_minus_excluded_plus_included(
    values_per_axis: list[list[int]], data: st.DataObject
) -> None:
    matrix = numbered(values_per_axis)
    rows = [dict(zip(matrix, combo, strict=True)) for combo in itertools.product(*matrix.values())]
    exclude = data.draw(
        st.lists(
            st.sampled_from(rows).flatmap(
                lambda row: st.sets(st.sampled_from(sorted(row)), min_size=1).map(
                    lambda keys: {k: row[k] for k in keys}
                )
            ),
            max_size=3,
        )
    )
    n_include = data.draw(st.integers(0, 3))
    # whole rows (the prompt names every axis), with values no product row has
    include = tuple({name: 100 + j for name in matrix} for j in range(n_include))
    s = spec(
        defaults={"image_url": URL, "prompt": prompt_of(matrix)},
        matrix=matrix,
        exclude=tuple(exclude),
        include=include,
    )
    excluded = sum(any(all(r[k] == v for k, v in e.items()) for e in exclude) for r in rows)
    assert len(run(s)) == len(rows) - excluded + n_include


@given(small_axes)
def test_first_axis_varies_slowest(values_per_axis: list[list[int]]) -> None:
    matrix = numbered(values_per_axis)
    s = spec(defaults={"image_url": URL, "prompt": prompt_of(matrix)}, matrix=matrix)
    got = [tuple(r.vars[name] for name in matrix) for r in run(s)]
    assert got == list(itertools.product(*matrix.values()))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(small_axes, st.data())
def test_a_row_keeps_its_key_when_axes_grow_or_are_reordered(
    values_per_axis: list[list[int]], data: st.DataObject
) -> None:
    matrix = numbered(values_per_axis)
    defaults = {"image_url": URL, "prompt": prompt_of(matrix)}
    before = {
        json.dumps(r.vars, sort_keys=True): r.key
        for r in run(spec(matrix=matrix, defaults=defaults))
    }
    grown = dict(matrix)
    axis = data.draw(st.sampled_from(sorted(grown)))
    grown[axis] = [*grown[axis], 99]
    order = data.draw(st.permutations(sorted(grown)))
    after = {
        json.dumps(r.vars, sort_keys=True): r.key
        for r in run(spec(matrix={k: grown[k] for k in order}, defaults=defaults))
    }
    assert all(after[row] == key for row, key in before.items())


@given(st.integers(1, 60), st.integers(0, 2**32), st.integers(1, 60))
def test_sample_properties(size: int, seed: int, n: int) -> None:
    matrix = {"seed": {"range": [0, size - 1]}}
    everything = [r.input["seed"] for r in run(spec(matrix=matrix))]
    picked = [r.input["seed"] for r in run(spec(matrix=matrix, sample=Sample(n, seed)))]
    assert picked == [r.input["seed"] for r in run(spec(matrix=matrix, sample=Sample(n, seed)))]
    assert len(picked) == min(n, size)
    assert picked == sorted(set(picked)) and set(picked) <= set(everything)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3), st.integers(1, 60), st.integers(0, 10), st.integers(1, 30), st.integers(0, 5)
)
@also_try(outer=3, size=100, grow=1, n=24, seed=1)  # like specs/dataset.yaml's seeds grown by one
def test_sampling_is_stable_when_the_grid_grows(
    outer: int, size: int, grow: int, n: int, seed: int
) -> None:
    """Adding k rows to a grid changes at most k sampled rows (bottom-k by a seeded key hash),
    even when they are added in the middle of the run order."""
    strengths = [0.3, 0.5, 0.7][:outer]
    small = {"strength": strengths, "seed": {"range": [0, size - 1]}}
    big = {"strength": strengths, "seed": {"range": [0, size + grow - 1]}}
    before = {r.key for r in run(spec(matrix=small, sample=Sample(n, seed)))}
    after = [r.key for r in run(spec(matrix=big, sample=Sample(n, seed)))]
    assert len(after) == min(n, outer * (size + grow))
    assert len(before - set(after)) <= outer * grow
    everything = [r.key for r in run(spec(matrix=big))]
    assert [k for k in everything if k in set(after)] == after  # run order kept


def test_data_uris_are_journaled_by_content_like_files(tmp_path: Path) -> None:
    png = b"\x89PNG pretend"
    (tmp_path / "a.png").write_bytes(png)
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    defaults = {"prompt": "p"}
    [local] = run(spec(tmp_path, matrix={"image_url": ["a.png"]}, defaults=defaults))
    [inline] = run(spec(tmp_path, matrix={"image_url": [uri]}, defaults=defaults))
    assert inline.input["image_url"] == local.input["image_url"]  # the same picture, one hash
    assert inline.key == local.key and inline.inline == {"image_url": uri} and not inline.files


def test_collapsed_rows_are_counted_with_their_cause() -> None:
    collapsed = Collapsed()
    s = spec(
        matrix={"seed": [1, 2, 1.0], "strength": [0.5, 0.50]},
        include=({"seed": 2, "strength": 0.5},),
    )
    assert len(list(expand(s, EP, collapsed=collapsed))) == 2
    # seed 1.0 repeats 1 (two strengths each), strength 0.50 repeats 0.5 on every seed
    assert collapsed.rows == 5
    assert collapsed.by == {"strength": 3, "seed": 2, "include": 1}


def test_rows_collapsed_by_identical_image_files_say_so(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):  # three names, one picture
        (tmp_path / f"{name}.png").write_bytes(b"same bytes")
    (tmp_path / "d.png").write_bytes(b"other bytes")
    collapsed = Collapsed()
    s = spec(
        tmp_path,
        defaults={"tag": "p"},
        matrix={"image_url": {"files": "*.png"}, "seed": [1, 2], "prompt": ["p", "{tag}"]},
    )
    assert len(list(expand(s, EP, collapsed=collapsed))) == 4  # a and d, by 2 seeds
    # b and c collapse for their bytes (alike to a's), named as such, never as "templates"
    assert collapsed.by == {
        "templates": 4,  # "{tag}" renders as "p" (on a and d)
        "identical input files (a.png = b.png)": 4,
        "identical input files (a.png = c.png)": 4,
    }


# --- a million rows ----------------------------------------------------------------------------


def million(tmp_path: Path) -> Spec:
    (tmp_path / "animals.txt").write_text("".join(f"animal {i}\n" for i in range(1000)))
    return spec(
        tmp_path,
        matrix={
            "prompt": ["a {animal}, wizard"],
            "animal": {"lines": "animals.txt"},
            "seed": {"range": [0, 999]},
        },
    )


def test_a_million_rows_expand_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keyed: list[str] = []

    def spy(encode: Any) -> Any:
        def counted(*args: Any) -> int:
            keyed.append(args[0])
            return int(encode(*args))

        return counted

    monkeypatch.setattr(scan, "body_key", spy(scan.body_key))
    monkeypatch.setattr(scan, "text_key", spy(scan.text_key))
    s = million(tmp_path)
    first = list(itertools.islice(expand(s, EP), 10))
    assert len(keyed) == 10  # ten rows asked, ten rows built: nothing ahead of the consumer
    assert [r.input["seed"] for r in first] == list(range(10))
    assert first[0].input["prompt"] == "a animal 0, wizard"


@pytest.mark.slow  # ~20 s: the count must be a million for its memory to tell
def test_counting_a_million_rows_keeps_memory_flat(tmp_path: Path) -> None:
    # A child process, so its peak memory is this count's alone (tracemalloc would slow a
    # million rows down fivefold).
    million(tmp_path)
    script = f"""
import resource
from pathlib import Path
from tests.test_grid import EP, million
from runner.grid.expand import expand
s = million(Path({str(tmp_path)!r}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(sum(1 for _ in expand(s, EP)), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[0]) == 1_000_000
    assert int(out[1]) < 100_000  # KiB: a million live rows would be several hundred MB


# --- templates in variables, axes that matter, canonical numbers -------------------------------


def test_templates_inside_variable_values_render() -> None:
    s = spec(
        defaults={"image_url": URL, "prompt": "{subject}"},
        matrix={"subject": ["a {animal} on a hill"], "animal": ["cat", "owl"]},
    )
    requests = run(s)
    assert [r.input["prompt"] for r in requests] == ["a cat on a hill", "a owl on a hill"]
    # vars show the value the row really used
    assert requests[1].vars == {"subject": "a owl on a hill", "animal": "owl"}


def test_a_template_cycle_is_an_error_naming_it() -> None:
    s = spec(defaults={"image_url": URL, "prompt": "{a}", "a": "x {b}", "b": "y {a}"})
    e = grid_error(s)
    assert e.message == "template cycle: a → b → a"
    assert e.path == ("defaults", "b")


def test_an_undefined_name_in_a_variable_is_found_before_any_row() -> None:
    s = spec(defaults={"image_url": URL, "prompt": "{scene}"}, matrix={"scene": ["{who} here"]})
    e = grid_error(s)
    assert "undefined template variable 'who'" in e.message
    assert e.path == ("matrix", "scene", 0)


def test_vars_show_what_an_object_axis_overrode() -> None:
    s = spec(
        defaults={"image_url": URL, "prompt": "{style}", "style": "plain"},
        matrix={"look": [{"style": "ink", "seed": 1}, {"style": "oil", "seed": 2}]},
        include=({"look": {"style": "chalk", "seed": 3}},),
    )
    requests = run(s)
    assert [r.input["prompt"] for r in requests] == ["ink", "oil", "chalk"]
    assert all("style" not in r.vars for r in requests)  # the default's "plain" was not used
    paired = spec(
        defaults={"image_url": URL, "prompt": "{style}"},
        matrix={"look": [{"style": "{tone} ink", "seed": 1}], "tone": ["dark"]},
    )
    [r] = run(paired)
    assert r.vars["look"] == {"style": "dark ink", "seed": 1}  # rendered inside the mapping too


@pytest.mark.parametrize(
    ("kw", "problems"),
    [
        (
            {"matrix": {"guidance": [2, 3.5, 5], "steps": [20, 30, 40]}},
            [
                ("axis 'guidance'", "(did you mean 'guidance_scale'?)", ("matrix", "guidance")),
                ("axis 'steps'", "(did you mean 'num_inference_steps'?)", ("matrix", "steps")),
            ],
        ),
        (
            {"matrix": {"look": [{"seed": 1, "mood": "x"}]}},
            [("field of axis 'look', 'mood'", "", ("matrix", "look", 0, "mood"))],
        ),
        (
            {
                "defaults": {"image_url": URL, "prompt": "p", "label": "a"},
                "matrix": {"seed": [1]},
                "include": ({"label": "x", "seed": 2},),
            },
            [("include key 'label'", "", ("include", 0, "label"))],
        ),
    ],
)
def test_an_axis_that_changes_no_request_is_an_error(
    kw: dict[str, Any], problems: list[tuple[str, str, tuple[Any, ...]]]
) -> None:
    e = grid_error(spec(**kw))
    errors = getattr(e, "errors", [e])
    assert len(errors) == len(problems)
    for error, (what, hint, path) in zip(errors, problems, strict=True):
        assert error.message.startswith(what + " is no input of " + EP.id)
        assert hint in error.message
        assert error.message.endswith("HINT: to repeat a request, sweep 'seed'")
        assert error.path == path


def test_a_variable_used_only_through_another_variable_counts_as_used() -> None:
    s = spec(
        defaults={"image_url": URL, "prompt": "{scene}", "scene": "{who} at night"},
        matrix={"who": ["a cat", "an owl"]},
    )
    assert [r.input["prompt"] for r in run(s)] == ["a cat at night", "an owl at night"]


_ints = st.lists(st.integers(10, 50), min_size=1, max_size=4, unique=True)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["seed", "num_inference_steps", "who", "mood"]), _ints),
    st.sets(st.sampled_from(["who", "mood"])),
)
def test_every_axis_changes_the_request_set(
    axes_values: dict[str, list[int]], in_template: set[str]
) -> None:
    prompt = " ".join("{" + n + "}" for n in sorted(in_template)) or "p"
    defaults = {"image_url": URL, "prompt": prompt, "who": 0, "mood": 0}
    s = spec(defaults=defaults, matrix=axes_values)
    unused = {n for n in axes_values if n in ("who", "mood") and n not in in_template}
    if unused:
        e = grid_error(s)
        assert {str(x.path[-1]) for x in getattr(e, "errors", [e])} == unused
        return
    expected = 1
    for values in axes_values.values():
        expected *= len(values)
    assert len(run(s)) == expected


def test_number_spellings_are_one_value() -> None:
    a = run(spec(matrix={"guidance_scale": [5], "seed": [1, 1.0]}))
    b = run(spec(matrix={"guidance_scale": [5.0], "seed": [1.0]}))
    assert [r.key for r in a] == [r.key for r in b]  # one request, one key
    assert a[0].input["guidance_scale"] == 5 and type(a[0].input["seed"]) is int
    steps = run(spec(defaults={"image_url": URL, "prompt": "{g}", "g": 2.0}))
    assert steps[0].input["prompt"] == "2"  # templates see the canonical number too


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["seed", "num_inference_steps", "guidance_scale"]),
        st.lists(st.integers(10, 20), min_size=1, max_size=3, unique=True),
        min_size=1,
    ),
    st.randoms(use_true_random=False),
)
def test_keys_are_invariant_under_number_spelling_and_axis_order(
    axes_values: dict[str, list[int]], rnd: Any
) -> None:
    plain = {run_key for run_key in (r.key for r in run(spec(matrix=axes_values)))}
    names = list(axes_values)
    rnd.shuffle(names)
    respelled = {n: [float(v) if rnd.random() < 0.5 else v for v in axes_values[n]] for n in names}
    assert {r.key for r in run(spec(matrix=respelled))} == plain


def test_csv_cells_say_booleans_and_unset(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text(
        "prompt,enable_safety_checker,strength\na,false,\nb,true,0.5\n"
    )
    s = spec(
        tmp_path, defaults={"image_url": URL, "strength": 0.8}, matrix={"r": {"csv": "rows.csv"}}
    )
    a, b = run(s)
    assert a.input == {
        "image_url": URL,
        "prompt": "a",
        "enable_safety_checker": False,
        "strength": 0.8,
    }
    assert b.input["enable_safety_checker"] is True and b.input["strength"] == 0.5


def test_an_empty_csv_cell_with_no_default_leaves_the_field_out(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("prompt,strength\na,\nb,0.5\n")
    s = spec(tmp_path, defaults={"image_url": URL}, matrix={"r": {"csv": "rows.csv"}})
    a, b = run(s)  # an empty cell in a column that may hold templates: nothing to render
    assert "strength" not in a.input and b.input["strength"] == 0.5


@pytest.mark.parametrize(
    ("name", "text", "source"),
    [
        ("rows.csv", "prompt,seed\na {tag} dog,1\na cat,2\n", {"csv": "rows.csv"}),
        (
            "rows.jsonl",
            '{"prompt": "a {tag} dog", "seed": 1}\n{"prompt": "a cat", "seed": 2}\n',
            {"jsonl": "rows.jsonl"},
        ),
        ("", "", [{"prompt": "a {tag} dog", "seed": 1}, {"prompt": "a cat", "seed": 2}]),
    ],
)
def test_vars_of_an_object_axis_hold_what_the_row_sent(
    tmp_path: Path, name: str, text: str, source: Any
) -> None:
    if name:
        (tmp_path / name).write_text(text)
    s = spec(tmp_path, defaults={"image_url": URL, "tag": "red"}, matrix={"r": source})
    a, b = run(s)
    assert a.input["prompt"] == "a red dog"
    assert a.vars == {"tag": "red", "r": {"prompt": "a red dog", "seed": 1}}  # rendered
    assert b.vars["r"] == {"prompt": "a cat", "seed": 2}


@pytest.mark.parametrize(
    ("name", "text", "axis", "where"),
    [
        ("rows.csv", "prompt,seed\na cat,1\n\na {tagz} dog,2\n", {"csv": "rows.csv"}, 4),
        # a quoted cell over two lines: the row's last line, as csv counts them
        ("rows.csv", 'prompt,seed\n"a\ncat",1\na {tagz} dog,2\n', {"csv": "rows.csv"}, 4),
        (
            "rows.jsonl",
            '{"prompt": "a cat", "seed": 1}\n{"prompt": "a {tagz} dog", "seed": 2}\n',
            {"jsonl": "rows.jsonl"},
            2,
        ),
        ("prompts.txt", "a cat\n\n\na {tagz} dog\n", {"lines": "prompts.txt"}, 4),
        # found only when the row renders: an empty cell leaves 'animal' unset in row 2
        ("rows.csv", "prompt,animal\na {animal},owl\nb {animal},\n", {"csv": "rows.csv"}, 3),
    ],
)
def test_an_undefined_name_in_a_file_row_names_the_file_and_line(
    tmp_path: Path, name: str, text: str, axis: Any, where: int
) -> None:
    (tmp_path / name).write_text(text)
    s = spec(tmp_path, defaults={"image_url": URL, "tag": "red"}, matrix={"r": axis})
    if "lines" in axis:
        s = spec(tmp_path, defaults={"image_url": URL, "tag": "red"}, matrix={"prompt": axis})
    with pytest.raises(GridError) as info:
        run(s)
    e = info.value
    assert e.message.startswith(f"{name} line {where}: undefined template variable"), e.message
    assert e.path[-1] in ("csv", "jsonl", "lines")


_var_names = st.sampled_from(["a", "b", "c"])
_var_text = st.lists(
    st.one_of(st.sampled_from(["x", " ", "cat", "0.5"]), _var_names.map("{{{}}}".format)),
    max_size=3,
).map("".join)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.dictionaries(_var_names, st.lists(_var_text, min_size=1, max_size=2, unique=True)),
    st.dictionaries(_var_names, _var_text),
    st.lists(_var_names, min_size=1, max_size=3).map(
        lambda ns: " ".join("{" + n + "}" for n in ns)
    ),
)
def test_no_request_body_holds_an_unrendered_name(
    axes_values: dict[str, list[str]], defaults: dict[str, str], prompt: str
) -> None:
    """Whatever the variables hold and however they nest, a spec either fails before its first
    request (undefined name, cycle, an axis nobody uses) or every body is fully rendered."""
    s = spec(defaults={"image_url": URL, "prompt": prompt, **defaults}, matrix=axes_values)
    try:
        requests = run(s)
    except GridError:
        return
    for request in requests:
        assert "{" not in request.input["prompt"] and "}" not in request.input["prompt"]
        for value in request.vars.values():
            assert "{" not in str(value)


def validated(s: Spec) -> grid.GridRows:
    """The spec's rows as validation hands them to a run."""
    engine = Engine(s, EP, RowGrid(s, EP))
    keys, positions = array("Q"), array("Q")
    for out in engine.blocks():
        keys.extend(out.keys)
        positions.extend(out.positions)
    return grid.GridRows(engine, keys, positions)


def test_replay_builds_only_the_rows_it_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    s = spec(matrix={"prompt": ["a", "b", "c"], "seed": [1, 2]})
    full = run(s)
    rows = validated(s)
    built: list[int] = []
    real = Engine.request

    def counting(self: Engine, position: int, key: int | None = None) -> Any:
        built.append(position)
        return real(self, position, key)

    monkeypatch.setattr(Engine, "request", counting)
    replay = grid.Replay(rows)
    assert [r.request() for r in replay] == full  # each row builds the whole request
    built.clear()
    taken = list(replay)
    assert [r.key for r in taken] == [r.key for r in full]
    assert built == []  # a row is replayed by its key alone until its request is asked for
    assert [r.request() for r in taken[4:]] == full[4:] and built == [4, 5]
    part = Shard(1, 2)
    mine = [r for r in full if part.holds(r.key)]
    assert 0 < len(mine) < len(full)
    assert [r.request() for r in grid.Replay(rows, part)] == mine
    assert len(grid.Replay(rows, part)) == len(mine) and len(replay) == len(full)


def test_replay_of_a_key_the_grid_no_longer_makes_is_named_not_sent() -> None:
    s = spec(matrix={"prompt": ["a", "b"]})
    rows = validated(s)
    rows.keys[1] = 0x0123456789ABCDEF
    first, second = grid.Replay(rows)
    guard = InputGuard(None)
    assert guard.row_changed(first.key, first.request()) is None
    stop = guard.row_changed(second.key, second.request())
    assert stop is not None and "request 0123456789abcdef is no longer in the grid" in stop.reason
