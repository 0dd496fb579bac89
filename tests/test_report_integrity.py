"""The report shows exactly what was sent and returned, or says it cannot: inputs checked by
the journal's sha256, outputs by their recorded size and sha256, values as the request sent
them, inputs copied beside the page, `--to DIR` for a read-only run folder."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runner.cli.commands import main
from runner.report import write_report

from .conftest import last_records, png_bytes
from .test_report import main_of, record, write_manifest


def run_spec(write_spec: Any, tmp_path: Path, capsys: Any, **top: Any) -> Path:
    """A real offline run of a spec (images/a.png as input by default); its output folder."""
    out = tmp_path / "out"
    assert main(["run", str(write_spec(**top)), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    return out


def links(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#][^"]*)"', page)


def test_an_edited_input_is_marked_not_shown_as_sent(write_spec, tmp_path, capsys, monkeypatch):
    out = run_spec(write_spec, tmp_path, capsys, matrix={"seed": [1, 2]})
    (tmp_path / "images" / "a.png").write_bytes(png_bytes(color=(0, 0, 255)))  # edited since
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(out), "--png"]) == 0
    printed = capsys.readouterr().out
    assert "input images/a.png changed since the run (2 requests)" in printed
    page = (out / "report.html").read_text()
    assert not [u for u in links(page) if "a.png" in u or "report-inputs" in u]
    assert main_of(page).count("input changed since the run") == 2
    assert re.search(r"fixed inputs.*images/a\.png.*changed since the run", page, re.S)
    summary = write_report(out)
    assert [(n.source, n.state, n.requests) for n in summary.inputs] == [
        ("images/a.png", "changed", 2)
    ]


def test_a_deleted_input_is_marked_missing(write_spec, tmp_path, capsys, monkeypatch):
    out = run_spec(write_spec, tmp_path, capsys, matrix={"seed": [1, 2]})
    (tmp_path / "images" / "a.png").unlink()
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(out)]) == 0
    assert "input images/a.png missing (2 requests)" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert main_of(page).count("input missing") == 2 and "a.png" not in "".join(links(page))


def test_an_intact_input_is_copied_beside_the_page(write_spec, tmp_path, capsys):
    out = run_spec(write_spec, tmp_path, capsys, matrix={"seed": [1, 2]})
    digest = hashlib.sha256((tmp_path / "images" / "a.png").read_bytes()).hexdigest()
    (out / "report-inputs").mkdir()
    (out / "report-inputs" / ("0" * 64 + ".png")).write_bytes(b"stale copy")
    page = write_report(out).path.read_text()
    copy = out / "report-inputs" / f"{digest}.png"
    assert copy.read_bytes() == (tmp_path / "images" / "a.png").read_bytes()
    assert [p.name for p in (out / "report-inputs").iterdir()] == [copy.name]  # stale one gone
    assert f'<img src="report-inputs/{digest}.png"' in page
    for url in links(page):  # the page reaches nothing outside its folder: zip it, serve it
        assert not url.startswith(("/", "..", "file:")) and (out / url).is_file(), url


def test_an_inline_input_is_linked_where_the_run_kept_it(write_spec, tmp_path, capsys):
    data = png_bytes(color=(10, 200, 10))
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    out = run_spec(write_spec, tmp_path, capsys, defaults={"image_url": uri})
    digest = hashlib.sha256(data).hexdigest()
    page = write_report(out).path.read_text()
    assert f'<img src="inputs/{digest}.png"' in page  # OUT/inputs is inside the report's folder
    assert not (out / "report-inputs").exists()


def test_an_output_replaced_by_other_bytes_is_changed_not_an_image(write_spec, tmp_path, capsys):
    out = run_spec(write_spec, tmp_path, capsys, matrix={"seed": [1, 2, 3]})
    files = sorted(o["file"] for r in last_records(out).values() for o in r["outputs"])
    (out / files[0]).write_text("not an image")
    original = (out / files[1]).read_bytes()  # the same size, other bytes
    (out / files[1]).write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert main(["report", str(out)]) == 0
    captured = capsys.readouterr()
    assert "3 ok, 0 failed, 0 pending, 2 images changed since the run" in captured.out
    assert "not shown" in captured.err
    # a run checks an output's size, not its bytes: it says how to get the image back
    assert "HINT: delete those files (the page marks them), and `runner run` on the" in (
        captured.err
    )
    page = (out / "report.html").read_text()
    assert files[0] not in "".join(links(page)) and files[1] not in "".join(links(page))
    assert files[2] in "".join(links(page))
    assert main_of(page).count("changed since the run:") == 2


def test_captions_and_labels_show_the_prompt_as_sent(write_spec, tmp_path, capsys):
    out = run_spec(
        write_spec,
        tmp_path,
        capsys,
        defaults={"prompt": "a {animal} {{with braces}}"},
        matrix={"animal": ["cat", "owl"], "seed": [1, 2]},
        include=[{"prompt": "a koala {{y}}", "seed": 7}],
    )
    page = write_report(out).path.read_text()
    shown = re.sub(r"<[^>]+>", "", main_of(page))
    assert "a cat {with braces}" in shown and "a koala {y}" in shown
    assert "{{" not in shown and "prompt —" not in shown  # the matrix rows' prompt is known
    assert "<td>input.prompt</td><td>a koala {y}</td>" in page  # the overlay: what was sent
    assert "<td>vars.prompt (as written)</td><td>a koala {{y}}</td>" in page


def test_a_variable_named_by_the_rendered_prompt_is_not_the_axis_across(tmp_path):
    # each rendered prompt goes with one animal: prompt × animal would fill only a diagonal
    recs = [
        record(
            tmp_path,
            f"k{t}{a}{s}",
            {"prompt": template, "animal": a, "seed": s},
            input={"image_url": "x", "prompt": template.format(a=a), "seed": s},
        )
        for t, template in enumerate(["a {a}", "café {a}"])
        for a in ("cat", "owl")
        for s in (1, 2)
    ]
    write_manifest(tmp_path, recs)
    summary = write_report(tmp_path)
    assert (summary.rows, summary.columns) == ("prompt", "seed")
    assert summary.pages == ("animal",)
    headers = re.findall(r"<tr><th>(.*?)</th>", summary.path.read_text())
    assert set(headers) == {"a cat", "café cat", "a owl", "café owl"}


def test_the_fixed_inputs_name_the_input_file(write_spec, tmp_path, capsys, monkeypatch):
    out = run_spec(write_spec, tmp_path, capsys, matrix={"seed": [1, 2]})
    monkeypatch.chdir(tmp_path)
    page = write_report(out).path.read_text()
    fixed = re.search(r'<table class="fixed">(.*?)</table>', page, re.S)
    assert fixed and re.search(
        r'<a href="report-inputs/[0-9a-f]{64}\.png">images/a\.png</a>', fixed[1]
    )
    assert "sha256:" not in fixed[1]


def test_report_to_another_folder_links_back_to_the_run(write_spec, tmp_path, capsys):
    out = run_spec(write_spec, tmp_path, capsys, matrix={"seed": [1, 2]})
    dest = tmp_path / "elsewhere" / "report"
    assert main(["report", str(out), "--to", str(dest), "--png"]) == 0
    printed = capsys.readouterr().out
    assert (
        printed.startswith(f"{dest / 'report.html'}: 2 ok") and str(dest / "report.png") in printed
    )
    assert not (out / "report.html").exists() and not (out / "report-inputs").exists()
    page = (dest / "report.html").read_text()
    imgs = re.findall(r'<img class="t" src="([^"]+)"', page)
    assert len(imgs) == 2 and all(u.startswith("../../out/images/") for u in imgs)
    for url in links(page):
        assert (dest / url).resolve().is_file(), url


def test_a_report_folder_that_cannot_be_written_is_exit_2_not_3(write_spec, tmp_path, capsys):
    out = run_spec(write_spec, tmp_path, capsys, matrix={"seed": [1, 2]})
    (out / "report.html").mkdir()  # a page that cannot be put in place
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("runner: cannot write") and len(err.splitlines()) == 1
    assert main(["report", str(out), "--to", str(out / "manifest.jsonl" / "x")]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_a_read_only_run_folder_suggests_to(write_spec, tmp_path, capsys, monkeypatch):
    out = run_spec(write_spec, tmp_path, capsys, matrix={"seed": [1, 2]})
    before = sorted(p.name for p in out.iterdir())
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:  # OUT as on a read-only mount
        if Path(path).resolve() == out.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    assert main(["report", str(out), "--png"]) == 2
    err = capsys.readouterr().err
    assert (
        f"HINT: write the report into a folder you can write: runner report {out} --to DIR" in err
    )
    assert len(err.splitlines()) == 1 and sorted(p.name for p in out.iterdir()) == before
    assert main(["report", str(out), "--to", str(tmp_path / "rep")]) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_a_read_only_folder_is_exit_2_with_a_hint(write_spec, tmp_path, capsys):
    out = run_spec(write_spec, tmp_path, capsys, matrix={"seed": [1, 2]})
    for path in [out, *out.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        assert main(["report", str(out)]) == 2
        assert "--to DIR" in capsys.readouterr().err
        assert main(["report", str(out), "--to", str(tmp_path / "rep")]) == 0
    finally:
        for path in [out, *out.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


@pytest.mark.parametrize("fmt", ["imagefolder", "csv"])
def test_an_export_that_cannot_be_written_is_exit_2_in_one_line(write_spec, tmp_path, capsys, fmt):
    out = run_spec(write_spec, tmp_path, capsys, matrix={"seed": [1, 2]})
    (tmp_path / "a-file").write_text("")
    assert main(["export", str(out), "--format", fmt, "--to", str(tmp_path / "a-file" / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("runner: cannot write") and len(err.splitlines()) == 1


def png_of(tmp_path: Path, name: str, axis_values: list[Any], n: int = 1) -> Image.Image:
    """The PNG grid of a one-axis run (in tmp_path/name/run, so every title is "run")."""
    out = tmp_path / name / "run"
    write_manifest(out, [record(out, f"k{i}", {"look": v}, n=n) for i, v in enumerate(axis_values)])
    summary = write_report(out, png=True)
    with Image.open(summary.pngs[0]) as img:
        return img.convert("RGB")


@pytest.mark.parametrize(
    ("one", "other"),
    [("café", "cafè"), ("кошка", "кошки"), ("a — b", "a – b"), ("Ωμέγα", "Ωμέγο")],
)
def test_png_labels_draw_accents_cyrillic_greek_and_dashes(tmp_path, one, other):
    from runner.report.fonts import Text

    if not Text(16).covers(one + other):
        pytest.skip("no font on this system draws these characters")
    first = png_of(tmp_path, "one", [one, "x"])
    second = png_of(tmp_path, "two", [other, "x"])
    assert first.size == second.size and first.tobytes() != second.tobytes()  # not two boxes


def test_png_labels_draw_cjk_where_a_font_has_it(tmp_path):
    from runner.report.fonts import Text

    if not Text(16).covers("猫犬"):
        pytest.skip("no CJK font on this system")
    assert (
        png_of(tmp_path, "one", ["猫", "x"]).tobytes()
        != png_of(tmp_path, "two", ["犬", "x"]).tobytes()
    )


def test_png_without_any_truetype_font_still_draws(tmp_path, monkeypatch):
    from runner.report import fonts

    monkeypatch.setattr(fonts, "_sans_files", lambda: ())
    monkeypatch.setattr(fonts, "_charsets", lambda: ())
    monkeypatch.setattr(fonts, "FALLBACKS", ())
    image = png_of(tmp_path, "one", ["猫 — é", "x"])
    assert image.width > 0


def test_png_draws_every_output_of_a_request(tmp_path):
    out = tmp_path / "run"
    write_manifest(out, [record(out, "k1", {"seed": 1}, n=3), record(out, "k2", {"seed": 2})])
    summary = write_report(out, png=True)
    with Image.open(summary.pngs[0]) as img:
        colours = {c for _, c in img.convert("RGB").getcolors(1 << 20) or []}
    assert {(0, 90, 160), (30, 90, 160), (60, 90, 160)} <= colours  # record()'s three outputs


def test_png_marks_changed_outputs_and_inputs(write_spec, tmp_path, capsys):
    out = run_spec(write_spec, tmp_path, capsys, matrix={"seed": [1, 2]})
    files = sorted(o["file"] for r in last_records(out).values() for o in r["outputs"])
    Image.new("RGB", (48, 32), (0, 255, 0)).save(out / files[0], "JPEG")  # not what was returned
    summary = write_report(out, png=True)
    with Image.open(summary.pngs[0]) as img:
        colours = {c for _, c in img.convert("RGB").getcolors(1 << 20) or []}
    assert not any(g > 200 and r < 60 and b < 60 for r, g, b in colours)  # the green is not drawn
    assert (253, 228, 228) in colours  # the changed output's box
    (tmp_path / "images" / "a.png").write_bytes(png_bytes(color=(1, 2, 3)))
    before = summary.pngs[0].read_bytes()
    assert write_report(out, png=True).pngs[0].read_bytes() != before  # the input is marked


def test_a_report_of_old_journal_lines_without_digests_still_shows_images(tmp_path):
    write_manifest(tmp_path, [record(tmp_path, f"k{s}", {"seed": s}) for s in (1, 2)])
    page = write_report(tmp_path).path.read_text()
    assert main_of(page).count("<img ") == 2
    assert (
        json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[0])["outputs"][0][
            "sha256"
        ]
        == "x"
    )


def test_report_and_export_read_an_image_one_way(tmp_path: Path) -> None:
    # An input the report copies and an image an export writes are read by one rule:
    # the bytes held in memory (an inline data: URI's) win over a file.
    from runner.export.rows import ImageRef
    from runner.folder.integrity import INTACT, HeldImage, InputState

    assert ImageRef.read is InputState.read is HeldImage.read
    (tmp_path / "a.png").write_bytes(b"file")
    on_disk = InputState(INTACT, "d", "png", None, path=tmp_path / "a.png")
    assert on_disk.read() == b"file"
    assert ImageRef("n", "png", path=tmp_path / "a.png", data=b"inline").read() == b"inline"
