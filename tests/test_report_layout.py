"""Reports that fit any sweep: the axes across and down (chosen or given), the other axes as
tables or as captions, click-to-enlarge overlays, and the PNG grids."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runner.cli.commands import main
from runner.errors import UsageError
from runner.report import write_report
from runner.report.layout import choose_layout

from .test_report import main_of, record, write_manifest

SIX_AXES: dict[str, list[Any]] = {
    "prompt": ["a cat", "an owl", "a fox", "a bear", "a koala"],
    "seed": [1, 2, 3, 4],
    "strength": [0.5, 0.7, 0.9],
    "guidance_scale": [2.5, 5, 7.5],
    "steps": [20, 40],
    "look": ["warm", "cold"],
}


def grid(out: Path, axes: dict[str, list[Any]], n: int | None = None) -> list[dict[str, Any]]:
    """Records for the product of `axes` (a seeded sample of n of them), with real PNGs."""
    rows = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    if n is not None:
        rows = random.Random(7).sample(rows, n)
    recs = [record(out, f"k{i:04d}", row) for i, row in enumerate(rows)]
    write_manifest(out, recs)
    return recs


def test_a_six_axis_sample_of_50_rows_is_a_few_full_tables(tmp_path):
    grid(tmp_path, SIX_AXES, n=50)
    summary = write_report(tmp_path)
    assert (summary.rows, summary.columns) == ("prompt", "seed")  # the two with most values
    assert summary.tables <= 2 and summary.captions  # a few full tables, not one per row
    page = main_of(summary.path.read_text())
    tables = re.findall(r'<table class="grid">(.*?)</table>', page, re.S)
    assert len(tables) == summary.tables
    for table in tables:
        filled = [c for c in re.findall(r"<td>(.*?)</td>", table, re.S) if "<img " in c]
        assert len(filled) > 1  # no table of one cell
    assert page.count('<div class="rec" id="t-') == 50  # every row is shown, once
    captions = re.findall(r'<div class="cap">(.*?)</div>', page)
    assert len(captions) == 50
    assert all(all(a in c for a in summary.captions) for c in captions)


def test_a_full_grid_keeps_one_table_per_combination(tmp_path):
    axes = {"animal": ["cat", "owl", "fox"], "seed": [1, 2, 3], "steps": [10, 20], "look": [1, 2]}
    grid(tmp_path, axes)
    summary = write_report(tmp_path)
    assert (summary.rows, summary.columns) == ("animal", "seed")
    assert summary.pages == ("steps", "look") and summary.tables == 4 and summary.captions == ()


def test_the_axis_with_the_most_values_goes_down(tmp_path):
    grid(tmp_path, {"strength": [0.5, 0.9], "seed": [1, 2, 3, 4], "animal": ["cat", "owl", "fox"]})
    summary = write_report(tmp_path)
    assert (summary.rows, summary.columns, summary.pages) == ("seed", "animal", ("strength",))


def test_x_and_y_choose_the_axes(tmp_path, capsys):
    axes = {"strength": [0.5, 0.9], "seed": [1, 2, 3, 4], "animal": ["cat", "owl", "fox"]}
    recs = grid(tmp_path, axes)
    assert main(["report", str(tmp_path), "--x", "strength", "--y", "animal"]) == 0
    assert "animal × strength, 4 tables by seed" in capsys.readouterr().out
    summary = write_report(tmp_path, x="strength")
    assert (summary.rows, summary.columns) == ("seed", "strength")
    assert main(["report", str(tmp_path), "--x", "colour"]) == 2
    err = capsys.readouterr().err
    assert "--x 'colour' is not an axis of this run (swept axes: strength, seed, animal)" in err
    with pytest.raises(UsageError, match="same axis"):
        choose_layout(recs, "seed", "seed")


def test_the_spec_s_report_block_is_recorded_and_used(write_spec, tmp_path, capsys):
    spec = write_spec(
        matrix={"strength": [0.5, 0.9], "seed": [1, 2, 3]}, report={"x": "seed", "y": "strength"}
    )
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert runs[-1]["report"] == {"x": "seed", "y": "strength"}
    summary = write_report(out)
    assert (summary.rows, summary.columns) == ("strength", "seed")  # not seed down by default
    assert write_report(out, y="seed").rows == "seed"  # the command line wins


def test_a_report_block_naming_no_axis_is_a_spec_error(write_spec, capsys):
    spec = write_spec(matrix={"seed": [1, 2]}, report={"x": "sede"})
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "report.x 'sede' is not an axis of this spec (axes: seed)" in err
    assert re.search(r"job\.yaml:\d+:\d+: ", err)


def test_every_image_opens_its_full_size_and_inputs_without_script(tmp_path):
    recs = grid(tmp_path, {"seed": [1, 2], "strength": [0.5, 0.9]})
    failed = record(
        tmp_path,
        "kbad",
        {"seed": 3, "strength": 0.5},
        status="failed",
        error={"type": "validation", "message": "no", "http_status": 422},
    )
    write_manifest(tmp_path, [failed])
    page = write_report(tmp_path).path.read_text()
    assert "<script" not in page and "http" not in page.replace("http_status", "")
    targets = set(re.findall(r'href="#(v-[^"]+)"', page))
    overlays = set(re.findall(r'<section class="lb" id="(v-[^"]+)"', page))
    assert targets == overlays == {f"v-{r['key']}" for r in [*recs, failed]}
    backs = set(re.findall(r'href="#(t-[^"]+)"', page))
    anchors = set(re.findall(r'id="(t-[^"]+)"', page))
    assert backs == anchors and len(anchors) == 5
    overlay = re.search(r'<section class="lb" id="v-k0000">(.*?)</section>', page, re.S)
    assert overlay and '<img src="images/k0000-0.png"' in overlay[1]
    assert "<td>input.prompt</td><td>a red square</td>" in overlay[1]
    assert "<td>vars.seed</td><td>1</td>" in overlay[1]
    assert ".lb:target{display:block" in page  # the overlay shows only when it is the target


def test_png_grids_one_per_table_with_labelled_edges(tmp_path, capsys):
    axes = {"animal": ["cat", "owl", "fox"], "seed": [1, 2], "steps": [10, 20]}
    grid(tmp_path, axes)
    (tmp_path / "report-007.png").write_bytes(b"stale")
    assert main(["report", str(tmp_path), "--png"]) == 0
    printed = capsys.readouterr().out.splitlines()
    pngs = sorted(tmp_path.glob("report*.png"))
    assert [p.name for p in pngs] == ["report-001.png", "report-002.png"]
    assert printed[1:] == [str(p) for p in pngs]
    with Image.open(pngs[0]) as img:
        rgb = img.convert("RGB")
        width, height = rgb.size
        # 2 columns and 3 rows of 40x30 images grown to 128 px tiles, plus the labelled edges
        assert width > 200 + 2 * 128 and height > 3 * 128 + 60
        header = rgb.crop((210, 50, width - 10, 110))  # the column labels' band
        left = rgb.crop((8, 130, 190, height - 10))  # the row labels' band
        for band in (header, left):
            colours = band.getcolors(1 << 16) or []
            assert any(sum(c) < 150 for _, c in colours)  # dark text on it
    assert main(["report", str(tmp_path), "--png", "--x", "animal", "--y", "seed"]) == 0
    assert len(list(tmp_path.glob("report*.png"))) == 2


def test_png_of_a_single_table_and_of_a_gallery(tmp_path):
    write_manifest(tmp_path, [record(tmp_path, f"k{i}", {"prompt": "same"}) for i in range(3)])
    summary = write_report(tmp_path, png=True)
    assert [p.name for p in summary.pngs] == ["report.png"]
    with Image.open(summary.pngs[0]) as img:
        assert img.width >= 3 * 128


def test_at_most_50_tables_even_when_full():
    axes = {name: [1, 2, 3] for name in "abcdef"}  # 81 full 3 x 3 tables by c, d, e, f
    recs: list[Any] = [
        {"key": f"k{i}", "status": "ok", "vars": dict(zip(axes, values, strict=True))}
        for i, values in enumerate(itertools.product(*axes.values()))
    ]
    layout = choose_layout(recs)
    assert (layout.rows, layout.columns) == ("a", "b")
    assert layout.pages == ("c", "d", "e") and layout.captions == ("f",)
    assert len(layout.tables) == 27
