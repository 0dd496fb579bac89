"""validate.check: the full `runner validate` pipeline, each problem one located line."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from PIL import Image, ImageFile

from runner.endpoints import get_endpoint
from runner.errors import SpecErrors
from runner.grid import localimages
from runner.spec.check import Checked, check
from runner.spec.inputs import plain_check
from runner.spec.located import MAX_ERRORS

from .conftest import png_bytes

EP = get_endpoint("fal-ai/flux-1/dev/image-to-image")
assert EP is not None

SPECS = Path(__file__).resolve().parent.parent / "specs"
HEAD = "version: 1\nendpoint: fal-ai/flux-1/dev/image-to-image\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png_bytes(4, 4, (10, 20, 30)))
    return tmp_path


def _errors(folder: Path, text: str) -> list[str]:
    path = folder / "job.yaml"
    path.write_text(HEAD + text, encoding="utf-8")
    with pytest.raises(SpecErrors) as info:
        check(path)
    return [f"{e.line}:{e.col}: {e.message}" for e in info.value.errors]


@pytest.mark.parametrize(("name", "count"), [("quickstart", 2), ("sweep", 12), ("dataset", 24)])
def test_shipped_specs_pass(name: str, count: int) -> None:
    checked = check(SPECS / f"{name}.yaml")
    assert checked.count == count
    assert checked.endpoint.id == checked.spec.endpoint
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.count = 0  # type: ignore[misc]


def test_local_files_stand_as_sha256(folder: Path) -> None:
    path = folder / "ok.yaml"
    path.write_text(HEAD + "defaults: {image_url: images/a.png, prompt: a cat}\n")
    assert isinstance(check(path), Checked)


def test_same_problem_from_defaults_is_reported_once(folder: Path) -> None:
    text = (
        "defaults:\n  image_url: images/a.png\n  prompt: a cat\n  strength: 1.5\n"
        "matrix:\n  seed: {range: [1, 50]}\n"
    )
    assert _errors(folder, text) == ["6:3: 'strength' must be at most 1, got 1.5"]


def test_matrix_problem_names_the_first_row(folder: Path) -> None:
    text = (
        "defaults: {image_url: images/a.png}\nmatrix:\n  animal: [cat, owl]\n"
        '  prompt: ["a {animal}"]\n  seed: [1, 2]\n  strength: {range: [0.5, 1.5], step: 0.5}\n'
    )
    assert _errors(folder, text) == [
        "8:14: 'strength' must be at most 1, got 1.5 (row 3: animal=cat, prompt=a {animal}, seed=1)"
    ]


def test_stops_after_max_errors(folder: Path) -> None:
    bad = ", ".join(str(100 + i) for i in range(MAX_ERRORS + 10))
    text = (
        f"defaults: {{image_url: images/a.png, prompt: a}}\nmatrix:\n"
        f"  num_inference_steps: [{bad}]\n"
    )
    assert len(_errors(folder, text)) == MAX_ERRORS
    with pytest.raises(SpecErrors) as info:
        check(folder / "job.yaml")
    assert info.value.hidden == 10
    assert str(info.value).splitlines()[-1] == f"{folder / 'job.yaml'}: 10 more errors not shown"


def test_independent_errors_are_reported_together(folder: Path) -> None:
    """Schema errors do not hide the errors of the parts they leave intact."""
    text = (
        "defaults:\n  image_url: images/a.png\n  prompt: '{who} {animl}'\n  strength: 2\n"
        "  who: x\nmatrix:\n  seed: {range: [0, 3], step: 0}\n  animal: [cat, {a: 1}]\n"
        "  steps: [1]\nsample: {n: 0}\nexecution: {retries: -1}\nname: 5\n"
    )
    assert [e.split(": ", 1)[1] for e in _errors(folder, text)] == [
        "undefined template variable 'animl' (did you mean 'animal'?); defined: animal, "
        "image_url, prompt, seed, steps, strength, who",
        "'strength' must be at most 1, got 2",
        "'step' must not be 0",
        "an axis is either all mappings (paired fields) or all plain values",
        "'n' must be at least 1, got 0",
        "'retries' must be at least 0, got -1",
        "'name' must be a string, got 5",
    ]


def test_an_exclude_entry_that_matches_no_row_is_a_warning(folder: Path) -> None:
    path = folder / "job.yaml"
    path.write_text(
        HEAD + "defaults: {image_url: images/a.png, prompt: a}\nmatrix:\n  seed: [1, 2]\n"
        "exclude:\n  - {seed: 3}\n  - {seed: 2}\n  - {seed: 2}\n"
    )
    checked = check(path)
    assert checked.count == 1
    assert checked.warnings == (
        f"{path}:7:5: warning: this exclude entry matches no row, so it drops nothing",
    )


def test_a_default_that_is_no_field_and_no_template_reads_is_a_warning(folder: Path) -> None:
    # it is not sent: a user who meant a field must hear it, though a constant variable kept
    # for the journal's vars is allowed
    path = folder / "job.yaml"
    path.write_text(
        HEAD + "defaults:\n  image_url: images/a.png\n  prompt: a {style} cat\n  style: ink\n"
        "  guidance: 3\n  negative_prompt: blurry\n  batch: b7\n  b: 2\n"
    )
    checked = check(path)
    assert checked.count == 1
    unsent = "is not sent: it is no input of fal-ai/flux-1/dev/image-to-image and no template "
    kept = "; it is only kept in each row's vars"
    assert checked.warnings == (
        f"{path}:7:3: warning: defaults key 'guidance' {unsent}reads it (did you mean "
        f"'guidance_scale'?){kept}",
        f"{path}:8:3: warning: defaults key 'negative_prompt' {unsent}reads it{kept}",
        f"{path}:9:3: warning: defaults key 'batch' {unsent}reads it{kept}",
        # a name this short is inside too many field names to mean one of them
        f"{path}:10:3: warning: defaults key 'b' {unsent}reads it{kept}",
    )


def test_a_broken_symbolic_link_a_glob_matches_is_a_warning(folder: Path) -> None:
    (folder / "images" / "x.png").symlink_to("gone.png")
    path = folder / "job.yaml"
    path.write_text(HEAD + "defaults: {prompt: a}\nmatrix:\n  image_url: {files: 'images/*'}\n")
    checked = check(path)
    assert checked.count == 1
    assert checked.warnings == (
        f"{path}:5:15: warning: images/x.png is a broken symbolic link; skipped",
    )
    (folder / "images" / "y.png").symlink_to("gone.png")
    assert check(path).warnings == (
        f"{path}:5:15: warning: images/x.png and 1 more match are broken symbolic links; skipped",
    )


def test_missing_prompt_points_where_it_could_be_set(folder: Path) -> None:
    msg = "missing required field 'prompt' (set it in defaults, matrix or include)"
    assert _errors(folder, "defaults: {image_url: images/a.png}\n") == [f"3:1: {msg}"]
    assert _errors(folder, "matrix:\n  image_url: {files: 'images/*.png'}\n") == [f"3:1: {msg}"]


def test_include_rows_are_checked_where_they_are_written(folder: Path) -> None:
    text = (
        "defaults: {image_url: images/a.png, prompt: a}\ninclude:\n"
        "  - {seed: 1}\n  - {seed: 2, guidance_scale: 0}\n"
    )
    assert _errors(folder, text) == ["6:15: 'guidance_scale' must be at least 1, got 0"]


def test_limit_is_reported_at_limits_or_matrix(folder: Path) -> None:
    base = "defaults: {image_url: images/a.png, prompt: a}\nmatrix:\n  seed: {range: [1, 30]}\n"
    hint = ". HINT: raise limits.max_requests if you mean it, or take a part with sample: {n: ...}"
    assert _errors(folder, base + "limits:\n  max_requests: 20\n") == [
        "7:3: the grid has 30 requests, more than limits.max_requests (20)" + hint
    ]
    huge = base.replace("[1, 30]", "[1, 100000000]") + "limits: {max_requests: 10}\n"
    assert _errors(folder, huge) == [
        "6:10: the grid has at least 1000 requests, more than limits.max_requests (10)" + hint
    ]


def test_sample_keeps_a_big_grid_under_the_limit(folder: Path) -> None:
    path = folder / "s.yaml"
    path.write_text(
        HEAD + "defaults: {image_url: images/a.png, prompt: a}\n"
        "matrix:\n  seed: {range: [1, 300]}\nsample: {n: 5}\nlimits: {max_requests: 10}\n"
    )
    assert check(path).count == 5


def test_grid_errors_are_located(folder: Path) -> None:
    text = (
        'defaults: {image_url: images/a.png}\nmatrix:\n  prompt: [ok, "a {animl}"]\n'
        "  animal: [cat]\n"
    )
    [line] = _errors(folder, text)
    assert line.startswith("5:16: undefined template variable 'animl' (did you mean 'animal'?)")


def test_an_undefined_name_in_a_csv_row_names_the_file_and_line(folder: Path) -> None:
    (folder / "rows.csv").write_text("prompt,seed\na cat,1\na {tagz} dog,2\n")
    text = "defaults: {image_url: images/a.png, tag2: red}\nmatrix:\n  r: {csv: rows.csv}\n"
    [line] = _errors(folder, text)
    assert line.startswith("5:7: rows.csv line 3: undefined template variable 'tagz' (did you")


@pytest.mark.parametrize(
    ("name", "content", "axis"),
    [
        ("prompts.txt", "a plain cube\na {red} cube\n", "prompt: {lines: prompts.txt}"),
        ("rows.jsonl", '{"prompt": "a"}\n{"prompt": "a {red} cube"}\n', "r: {jsonl: rows.jsonl}"),
    ],
)
def test_an_undefined_name_in_a_data_file_suggests_literal_braces(
    folder: Path, name: str, content: str, axis: str
) -> None:
    (folder / name).write_text(content)
    [line] = _errors(folder, f"defaults: {{image_url: images/a.png}}\nmatrix:\n  {axis}\n")
    assert line.split(": ", 1)[1].startswith(f"{name} line 2: undefined template variable 'red'")
    assert line.endswith("; HINT: write {{red}} for literal braces")


def test_an_undefined_name_written_in_the_spec_has_no_literal_brace_hint(folder: Path) -> None:
    [line] = _errors(folder, "defaults: {image_url: images/a.png, prompt: 'a {red} cube'}\n")
    assert "undefined template variable 'red'" in line and "HINT" not in line


def test_out_is_passed_through(folder: Path) -> None:
    path = folder / "ok.yaml"
    path.write_text(HEAD + "defaults: {image_url: images/a.png, prompt: a cat}\n")
    assert check(path, out=folder / "x").spec.output == folder / "x"


def test_files_that_are_no_images_fail_at_validate(folder: Path) -> None:
    (folder / "images" / "notes.txt").write_text("not a picture")
    (folder / "images" / "b.png").write_bytes(b"\x89PNG but broken")
    text = "defaults: {prompt: a}\nmatrix:\n  image_url: {files: 'images/*'}\n"
    assert _errors(folder, text) == [
        "5:15: images/b.png is not an image (no image format recognises it) (row 2)",
        "5:15: images/notes.txt is not an image (no image format recognises it) (row 3)",
    ]


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def test_a_truncated_image_fails_at_validate_not_per_request(folder: Path) -> None:
    """Its header is fine; only decoding the whole image shows the data missing."""
    whole_png, whole_jpg = png_bytes(64, 64, (1, 2, 3), patch=(9, 9, 9)), _jpeg_bytes()
    (folder / "images" / "b.png").write_bytes(whole_png[: len(whole_png) // 2])
    (folder / "images" / "c.jpg").write_bytes(whole_jpg[: len(whole_jpg) // 2])
    text = "defaults: {prompt: a}\nmatrix:\n  image_url: {files: 'images/*'}\n"
    errors = _errors(folder, text)
    assert [e.split(" is ", 1)[0] for e in errors] == ["5:15: images/b.png", "5:15: images/c.jpg"]
    assert all(" is truncated or corrupt: image file is truncated" in e for e in errors)
    # the same image named by defaults is reported there, by its name relative to the spec
    assert _errors(folder, "defaults: {prompt: a, image_url: images/c.jpg}\n")[0].startswith(
        "3:23: images/c.jpg is truncated or corrupt: image file is truncated"
    )


def test_a_script_that_allows_truncated_images_does_not_weaken_validate(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    whole = _jpeg_bytes()
    (folder / "images" / "c.jpg").write_bytes(whole[: len(whole) // 2])
    [line] = _errors(folder, "defaults: {prompt: a, image_url: images/c.jpg}\n")
    assert "images/c.jpg is truncated or corrupt" in line
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the script's setting is left as it was


def test_each_image_is_decoded_once_until_it_changes(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_open = Image.open

    def spy(fp: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(localimages.Image, "open", spy)
    image = folder / "images" / "a.png"
    image.write_bytes(png_bytes(5, 5))  # a new size: whatever an earlier test cached is stale
    path = folder / "job.yaml"
    # 300 rows name one image, which validation and the cost estimate both read
    path.write_text(
        HEAD + "defaults: {image_url: images/a.png, prompt: a}\nmatrix:\n"
        "  seed: {range: [1, 300]}\ninclude:\n  - {seed: 0}\n"
    )
    assert check(path).count == 301
    assert opened == [str(image)]
    whole = image.read_bytes()
    image.write_bytes(whole[:-30])  # edited since: decoded again, and found truncated
    with pytest.raises(SpecErrors, match="images/a.png is truncated or corrupt"):
        check(path)
    assert opened == [str(image)] * 2


def test_x_keys_hold_anchors_and_a_misspelt_grid_part_waits(folder: Path) -> None:
    text = (
        "x-base: &base {image_url: images/a.png, prompt: '{who}'}\n"
        "defaults:\n  <<: *base\n  strength: 0.5\nmatrix:\n  who: [a, b]\n"
    )
    path = folder / "ok.yaml"
    path.write_text(HEAD + text)
    assert check(path).count == 2
    # `matrx` may hold the axes the templates use: their errors wait for the typo's fix...
    assert [e.split(": ", 1)[1] for e in _errors(folder, text.replace("matrix", "matrx"))] == [
        "unknown key 'matrx' (did you mean 'matrix'?)"
    ]
    # ...while an unrelated unknown key hides nothing
    errors = _errors(
        folder, text.replace("x-base", "base").replace("who: [a, b]", "who: [a, b]\n  mood: [x]")
    )
    assert len(errors) == 2 and "unknown key 'base'" in errors[0] and "axis 'mood'" in errors[1]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(
        [
            "image_url",
            "prompt",
            "strength",
            "num_inference_steps",
            "seed",
            "sync_mode",
            "num_images",
        ]
    ),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=3),
        st.lists(st.integers(), max_size=2),
    ),
)
def test_the_plain_field_check_never_passes_what_the_schema_refuses(field: str, value: Any) -> None:
    """The shortcut in front of jsonschema may decline a valid value, never accept a bad one."""
    schema = EP.fields[field]
    fine = plain_check(schema)
    assert fine is not None  # these fields' schemas are all plain
    if fine(value):
        assert not list(Draft202012Validator(schema).iter_errors(value)), (field, value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_url", "https://example.com/a.png"),
        ("prompt", "a cat in the rain"),
        ("strength", 0.5),
        ("num_inference_steps", 28),
        ("seed", 7),
        ("sync_mode", False),
        ("num_images", 2),
    ],
)
def test_the_plain_field_check_takes_the_usual_values(field: str, value: Any) -> None:
    """The shortcut is a shortcut: a check that declined every value would pass the test
    above and send each body to jsonschema."""
    fine = plain_check(EP.fields[field])
    assert fine is not None and fine(value)
    assert not list(Draft202012Validator(EP.fields[field]).iter_errors(value))
