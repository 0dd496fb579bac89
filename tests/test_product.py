"""The compiled product grid (product.py) against the reference, grid.expand: the same keys in
the same order, the same costs and counts, for every grid it takes on."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from runner import product, validate
from runner.cli import main
from runner.endpoints import get_endpoint
from runner.errors import GridError
from runner.grid import Collapsed, expand
from runner.plan import Pricing
from runner.product import Compiled, compile_product
from runner.rowgrid import RowGrid
from runner.validate import _InputChecker, _not_an_image

from .test_grid import EP, URL, spec

ENDPOINT = get_endpoint("fal-ai/flux-1/dev/image-to-image")


def compiled(s: Any) -> Compiled | None:
    inputs = _InputChecker(EP)
    return compile_product(s, EP, RowGrid(s, EP), inputs.field_problems, _not_an_image)


def agree(s: Any) -> Compiled | None:
    """Compile `s`; when it compiles, check it against the reference row by row."""
    try:
        reference_grid = RowGrid(s, EP)
        collapsed = Collapsed()
        reference = list(expand(s, EP, reference_grid, collapsed))
    except GridError:
        return None  # the spec is broken: the reference reports it (compiled or not)
    found = compiled(s)
    if found is None:
        return None
    pricing = Pricing(EP)
    assert collapsed.rows == 0, "a compiled grid never collapses"
    rows = list(found.rows())
    assert [k for k, _ in rows] == [r.key for r in reference]
    assert [c for _, c in rows] == [pricing.of(r) for r in reference]
    assert found.count == len(reference)
    remote = sum(
        any(str(r.input.get(f, "")).startswith(("http://", "https://")) for f in EP.file_fields)
        for r in reference
    )
    assert found.remote == remote
    return found


def png(size: tuple[int, int], colour: tuple[int, int, int] = (9, 9, 9)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("images")
    (base / "small.png").write_bytes(png((64, 48)))
    (base / "big.png").write_bytes(png((1500, 1200)))
    (base / "same.png").write_bytes(png((64, 48)))  # the bytes of small.png: one request
    return base


DATA_URI = "data:image/png;base64," + base64.b64encode(png((40, 30), (1, 2, 3))).decode()
# Text that JSON and str.format both treat specially.
_text = st.sampled_from(['a "q" {{x}}', "é ☃", "back\\slash", "{{", "}}", "plain", "x y", "\n"])
_number = st.sampled_from([1, 2, 5, 5.0, 0.5, 0.25, 1e0, 3, 7.5, 28, 40])
_image = st.sampled_from(["small.png", "big.png", "same.png", URL, DATA_URI])


@st.composite
def specs(draw: st.DrawFn, base: Path) -> Any:
    defaults: dict[str, Any] = {"image_url": draw(_image), "prompt": draw(_text)}
    matrix: dict[str, Any] = {}
    variables = draw(st.lists(st.sampled_from(["animal", "place", "mood"]), unique=True))
    for name in variables:
        if draw(st.booleans()):
            matrix[name] = draw(st.lists(_text, min_size=1, max_size=3))
        else:
            defaults[name] = draw(_text)
    if variables:  # the prompt reads some of them (maybe through another variable)
        used = draw(st.lists(st.sampled_from(variables), min_size=1, max_size=2))
        defaults["prompt"] = draw(_text) + " " + " ".join("{" + v + "}" for v in used)
        if len(variables) > 1 and variables[1] in defaults and draw(st.booleans()):
            defaults[variables[1]] = "via {" + variables[0] + "}"
    unused = [v for v in variables if v in matrix and "{" + v + "}" not in str(defaults)]
    for v in unused:
        del matrix[v]
    for field, values in (
        ("seed", st.lists(st.integers(0, 9), min_size=1, max_size=4)),
        ("strength", st.lists(_number.filter(lambda n: n <= 1), min_size=1, max_size=3)),
        ("num_images", st.lists(st.integers(1, 4), min_size=1, max_size=2)),
        ("num_inference_steps", st.lists(st.sampled_from([10, 28, 40]), min_size=1, max_size=2)),
        ("image_url", st.lists(_image, min_size=1, max_size=3)),
        ("prompt", st.lists(_text, min_size=1, max_size=2)),
    ):
        choice = draw(st.sampled_from(["axis", "default", "none"]))
        if choice == "axis" and field not in matrix:
            matrix[field] = draw(values)
        elif choice == "default":
            defaults[field] = draw(values)[0]
    if draw(st.booleans()):  # an object axis with fields no other axis sets
        fields = [f for f in ("guidance_scale", "acceleration") if f not in matrix]
        rows = draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "guidance_scale": st.sampled_from([1, 3.5, 3.5, 7]),
                        "acceleration": st.sampled_from(["none", "regular", "high"]),
                    }
                ),
                min_size=1,
                max_size=3,
            )
        )
        if fields:
            matrix["look"] = [{f: r[f] for f in fields} for r in rows]
    if draw(st.booleans()) and matrix:  # put the axes in another order
        matrix = dict(reversed(list(matrix.items())))
    return spec(base, matrix=matrix, defaults=defaults)


@pytest.mark.parametrize("held", [100_000, 3])  # 3: the longest axis is mostly streamed
@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_a_compiled_grid_makes_the_reference_keys_costs_and_counts(
    images: Path, held: int, data: st.DataObject
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(product, "MAX_VALUES", held)
        agree(data.draw(specs(images)))


def test_a_long_axis_with_two_alike_values_is_left_to_the_reference(
    images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(product, "MAX_VALUES", 2)
    s = spec(images, matrix={"prompt": ["a", "b", "c", "b"], "seed": [1, 2]})
    assert compiled(s) is None
    s = spec(images, matrix={"prompt": ["a", "b", "c", "d"], "seed": [1, 2]})
    assert agree(s) is not None


def test_the_grids_people_sweep_compile(images: Path) -> None:
    """The fast path is taken for the everyday sweeps (else the property above tests little)."""
    sweeps = [
        {"seed": [1, 2, 3], "strength": [0.5, 0.75]},
        {"prompt": ["a", "b"], "seed": {"range": [0, 9]}, "image_url": ["small.png", URL]},
        {"animal": ["cat", "owl"], "look": [{"guidance_scale": 2}, {"guidance_scale": 4}]},
        {"num_images": [1, 2], "image_url": ["big.png", DATA_URI]},
    ]
    defaults = {"image_url": "small.png", "prompt": "a {animal}", "animal": "dog"}
    for matrix in sweeps:
        s = spec(images, matrix=matrix, defaults=defaults)
        assert agree(s) is not None, matrix


def test_grids_it_leaves_to_the_reference(images: Path) -> None:
    defaults = {"image_url": "small.png", "prompt": "{animal} {place}"}
    two_axes_one_field = {"animal": ["cat", "owl"], "place": ["a", "b"]}
    assert compiled(spec(images, matrix=two_axes_one_field, defaults=defaults)) is None
    repeats = {"seed": [1, 1.0]}
    assert compiled(spec(images, matrix=repeats)) is None
    same_bytes = {"image_url": ["small.png", "same.png"]}
    assert compiled(spec(images, matrix=same_bytes)) is None
    with_exclude = spec(images, matrix={"seed": [1, 2]}, exclude=[{"seed": 1}])
    assert compiled(with_exclude) is None
    bad_value = {"strength": [0.5, 7]}  # over the schema's maximum: the reference says where
    assert compiled(spec(images, matrix=bad_value)) is None


def write_spec(folder: Path, matrix: str) -> Path:
    (folder / "in.png").write_bytes(png((64, 48)))
    (folder / "prompts.txt").write_text("".join(f"prompt {i} {{mood}}\n" for i in range(40)))
    path = folder / "job.yaml"
    path.write_text(
        "version: 1\nendpoint: fal-ai/flux-1/dev/image-to-image\nbackend: fal\n"
        "defaults: {image_url: in.png, mood: calm, num_inference_steps: 28}\n"
        f"matrix:\n{matrix}"
    )
    return path


def test_plan_says_the_same_with_and_without_the_fast_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_spec(
        tmp_path,
        "  prompt: {lines: prompts.txt}\n  seed: {range: [0, 24]}\n  strength: [0.5, 0.9]\n",
    )
    assert main(["plan", str(path), "--json"]) == 0
    fast = json.loads(capsys.readouterr().out)
    expanded: list[int] = []
    real = validate.expand

    def counting(*args: Any, **kw: Any) -> Any:
        for request in real(*args, **kw):
            expanded.append(1)
            yield request

    monkeypatch.setattr(validate, "expand", counting)
    assert main(["plan", str(path), "--json"]) == 0
    assert len(expanded) == 5  # the first rows shown, not the 2,000 rows
    monkeypatch.setattr(validate, "compile_product", lambda *a, **kw: None)
    assert main(["plan", str(path), "--json"]) == 0
    slow = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert len(expanded) == 5 + 2000
    assert fast == slow and fast["count"] == 2000


def test_an_empty_csv_cell_whose_default_reads_another_axis(tmp_path: Path) -> None:
    """An empty cell leaves the default in place, and the default's template may read another
    axis: the field then depends on two axes (found by a hostile user: the fast path rendered
    the default with the default's seed, and the run halted with "no longer in the grid")."""
    (tmp_path / "prompts.csv").write_text("prompt,strength\ncat,0.5\n,0.6\n")
    (tmp_path / "tags.csv").write_text("tag,strength\ncat,0.5\n,0.6\n")
    for rows, defaults in (
        ("prompts.csv", {"prompt": "a {seed}", "seed": 0}),  # the field itself
        ("tags.csv", {"prompt": "a {tag}", "tag": "{seed} style", "seed": 0}),  # a variable
    ):
        s = spec(
            tmp_path,
            matrix={"rows": {"csv": rows}, "seed": [1, 2]},
            defaults={"image_url": URL, **defaults},
        )
        reference = [r.key for r in expand(s, EP)]
        found = compiled(s)
        assert found is None or [k for k, _ in found.rows()] == reference


def test_a_variable_that_fails_to_render_is_left_to_the_reference(tmp_path: Path) -> None:
    """Every row renders its variables (its vars say what it used), those no field reads
    too: one that cannot render (a cycle) is the reference's error (found by a hostile user:
    validate said ok, then the run halted, saying the spec's inputs had changed)."""
    cases = [
        ({"seed": [1, 2]}, {"prompt": "p", "mood": "a {mood}"}),  # no field reads it
        (  # the second row's prompt does not read v, its vars do
            {"look": [{"prompt": "{v}", "tag": "a"}, {"prompt": "plain", "tag": "{v}"}]},
            {"v": "{tag}"},
        ),
    ]
    for matrix, defaults in cases:
        s = spec(tmp_path, matrix=matrix, defaults={"image_url": URL, **defaults})
        with pytest.raises(GridError, match="template cycle"):
            list(expand(s, EP))
        assert compiled(s) is None


def test_a_value_that_is_no_utf8_is_left_to_the_reference(tmp_path: Path) -> None:
    """A lone surrogate ("\\uD800" in YAML) cannot be hashed as UTF-8: the reference reports
    it (found by a hostile user: validate said ok, plan and run crashed with a traceback)."""
    s = spec(tmp_path, matrix={"prompt": ["ok", "bad \ud800"], "seed": [1, 2]})
    with pytest.raises(GridError, match="not JSON"):
        list(expand(s, EP))
    assert compiled(s) is None
