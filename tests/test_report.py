"""The HTML report: manifests written by hand for each layout, and one real run through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.cli.commands import main
from runner.errors import ManifestError
from runner.report import write_report

from .conftest import png_bytes

SHA = "sha256:" + "9c1e" * 16


def record(out: Path, key: str, vars: dict[str, Any], status: str = "ok", n: int = 1, **extra: Any):
    """One manifest line; an ok record gets n real PNGs under OUT/images."""
    rec: dict[str, Any] = {
        "key": key,
        "status": status,
        "endpoint": "fal-ai/flux-1/dev/image-to-image",
        "backend": "local",
        "input": {"image_url": SHA, "prompt": "a red square", **vars},
        "vars": vars,
        **extra,
    }
    if status == "ok" and "outputs" not in extra:
        (out / "images").mkdir(parents=True, exist_ok=True)
        rec["outputs"] = []
        for i in range(n):
            name = f"images/{key}-{i}.png"
            (out / name).write_bytes(png_bytes(40, 30, (30 * i, 90, 160)))
            rec["outputs"].append(
                {
                    "file": name,
                    "sha256": "x",
                    "width": 40,
                    "height": 30,
                    "content_type": "image/png",
                }
            )
    return rec


def write_manifest(out: Path, records: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "manifest.jsonl").open("a") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")


def main_of(page: str) -> str:
    """The page without its header and its click-to-enlarge overlays."""
    return page.split("<main>", 1)[1].split("</main>", 1)[0]


def grid_rows(page: str) -> list[list[str]]:
    """The first grid table as rows of cell HTML (header row included)."""
    table = re.search(r'<table class="grid">(.*?)</table>', page, re.S)
    assert table
    return [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S) for tr in table[1].split("<tr>")[1:]]


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match=r"no manifest\.jsonl in .*run `runner run SPEC` first"):
        write_report(tmp_path)


def test_a_row_without_a_variable_gets_its_own_column(tmp_path):
    write_manifest(tmp_path, [record(tmp_path, "k1", {"seed": 1}), record(tmp_path, "k2", {})])
    write_manifest(tmp_path, [record(tmp_path, "k3", {"seed": 1})])  # an include row, say
    summary = write_report(tmp_path)
    figures = re.findall(r"<figure>(.*?)</figure>", main_of(summary.path.read_text()))
    assert summary.columns == "seed" and len(figures) == 2
    assert figures[0].count("<img ") == 2 and "seed</span> —" in figures[1]


def test_zero_axes_gallery(tmp_path):
    write_manifest(tmp_path, [record(tmp_path, f"k{i}", {"prompt": "same"}) for i in range(3)])
    summary = write_report(tmp_path)
    page = main_of(summary.path.read_text())
    assert (summary.rows, summary.columns, summary.pages) == (None, None, ())
    assert summary.ok == 3 and page.count("<img ") == 3 and 'class="grid"' not in page


def test_one_axis_is_a_labelled_row(tmp_path):
    write_manifest(tmp_path, [record(tmp_path, f"k{s}", {"seed": s}) for s in (3, 1, 2)])
    summary = write_report(tmp_path)
    page = main_of(summary.path.read_text())
    assert (summary.rows, summary.columns) == (None, "seed")
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert [re.sub(r"<[^>]+>", "", c) for c in captions] == ["seed 1", "seed 2", "seed 3"]
    assert page.count("<img ") == 3 and 'class="grid"' not in page


def test_two_axes_table_numbers_ascending_others_first_seen(tmp_path):
    # the journal is only roughly in run order (concurrent workers): numbers are sorted
    recs = [
        record(tmp_path, f"k{animal}-{seed}", {"prompt": "p", "animal": animal, "seed": seed})
        for animal in ("owl", "cat")
        for seed in (2, 1, 3)
    ]
    write_manifest(tmp_path, recs)
    summary = write_report(tmp_path, x="seed", y="animal")
    assert (summary.rows, summary.columns, summary.pages) == ("animal", "seed", ())
    rows = grid_rows(summary.path.read_text())
    assert "animal" in rows[0][0] and "seed" in rows[0][0]
    assert rows[0][1:] == ["1", "2", "3"] and [r[0] for r in rows[1:]] == ["owl", "cat"]
    assert all(c.count("<img ") == 1 for r in rows[1:] for c in r[1:])
    assert 'src="images/kcat-3-0.png"' in rows[2][3] and 'src="images/kowl-1-0.png"' in rows[1][1]


def test_three_axes_small_multiples_with_object_axis(tmp_path):
    looks = [
        {"guidance_scale": 2.5, "num_inference_steps": 20},
        {"guidance_scale": 5.0, "num_inference_steps": 40},
    ]
    recs = [
        record(tmp_path, f"k{a}{b}{i}", {"animal": a, "seed": b, "look": look})
        for a in ("cat", "owl")
        for b in (1, 2)
        for i, look in enumerate(looks)
    ]
    write_manifest(tmp_path, recs)
    summary = write_report(tmp_path)
    page = summary.path.read_text()
    assert (summary.rows, summary.columns, summary.pages) == ("animal", "seed", ("look",))
    assert summary.captions == () and summary.tables == 2
    headings = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<h2>(.*?)</h2>", page)]
    assert headings == [
        "look guidance_scale=2.5, num_inference_steps=20",
        "look guidance_scale=5.0, num_inference_steps=40",
    ]
    assert page.count('<table class="grid">') == 2 and main_of(page).count("<img ") == 8
    assert "axes: animal (2) × seed (2) × look (2)" in page


def test_failed_pending_and_several_outputs(tmp_path):
    long = "the server said no " * 20
    error = {"type": "validation", "message": long, "http_status": 422}
    write_manifest(
        tmp_path,
        [
            record(tmp_path, "a", {"seed": 1}, n=3),
            record(tmp_path, "b", {"seed": 2}, status="submitting"),
            record(tmp_path, "b", {"seed": 2}, status="failed", error=error),
            record(tmp_path, "c", {"seed": 3}, status="submitting"),
            record(tmp_path, "d", {"seed": 4}, status="submitted", request_id="r"),
        ],
    )
    summary = write_report(tmp_path)
    page = summary.path.read_text()
    assert (summary.ok, summary.failed, summary.pending) == (1, 1, 2)
    assert "1 ok</span>" in page and "1 failed</span>" in page and "2 pending</span>" in page
    figures = re.findall(r"<figure>(.*?)</figure>", main_of(page))
    assert re.search(r'<div class="imgs">(<a [^>]+><img [^>]+></a>){3}</div>', figures[0])
    assert re.search(r'<a class="box rec failed" [^>]*href="#v-b"><b>validation</b>', figures[1])
    assert f'title="{long}"' in figures[1] and "…" in figures[1]  # shortened, full on hover
    assert "pending" in figures[2] and "pending" in figures[3] and "<img" not in figures[3]


def test_malicious_text_is_escaped(tmp_path):
    evil = "<script>alert('x')</script> & \"quotes\""
    write_manifest(
        tmp_path,
        [
            record(tmp_path, "a", {"prompt": evil}),
            record(
                tmp_path,
                "b",
                {"prompt": "fine"},
                status="failed",
                error={"type": "<img src=x onerror=alert(1)>", "message": evil, "http_status": 500},
            ),
            record(tmp_path, "c", {"prompt": "x"}, outputs=[{"file": "javascript:alert(1)"}]),
            record(tmp_path, "d", {"prompt": "y"}, outputs=[{"file": "../../etc/passwd"}]),
        ],
    )
    (tmp_path / "runs.jsonl").write_text(json.dumps({"spec": "</title><script>.yaml"}) + "\n")
    page = write_report(tmp_path).path.read_text()
    assert "<script" not in page and re.search(r"<[^>]*onerror", page) is None
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert 'href="javascript' not in page and "passwd" not in re.sub(r"missing [^<]*", "", page)
    assert main_of(page).count("<img ") == 1


def test_images_are_relative_lazy_and_sized(tmp_path):
    write_manifest(tmp_path, [record(tmp_path, f"k{s}", {"seed": s}, n=2) for s in (1, 2)])
    page = write_report(tmp_path).path.read_text()
    imgs = re.findall(r"<img [^>]+>", main_of(page))
    assert len(imgs) == 4
    full = re.findall(r'<img src="([^"]+)" loading="lazy" alt="output">', page)
    assert len(full) == 4 and all((tmp_path / src).is_file() for src in full)
    for img in imgs:
        src = re.search(r'src="([^"]+)"', img)
        assert src and src[1].startswith("images/") and (tmp_path / src[1]).is_file()
        assert 'width="40" height="30"' in img and 'loading="lazy"' in img
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_header_fixed_inputs_and_last_run(tmp_path):
    recs = [
        record(tmp_path, f"k{s}", {"seed": s}, input={"image_url": SHA, "seed": s}) for s in (1, 2)
    ]
    recs += [record(tmp_path, "k1", {"seed": 1}, input={"image_url": SHA, "seed": 1})]  # resumed
    write_manifest(tmp_path, recs)
    runs = [
        {"event": "start", "spec_sha256": "old", "runner_version": "0.0.1"},
        {
            "event": "end",
            "spec": "/home/u/sweep.yaml",
            "spec_sha256": "ab" * 32,
            "runner_version": "9.9.9",
            "endpoint": "fal-ai/flux-1/dev/image-to-image",
            "host": "box7",
        },
    ]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs) + '{"torn')
    summary = write_report(tmp_path)
    page = summary.path.read_text()
    assert summary.ok == 2 and "<h1>sweep</h1>" in page and "ab" * 32 in page and "9.9.9" in page
    assert "box7" not in page and "/home/u" not in page
    fixed = re.search(r'<table class="fixed">(.*?)</table>', page)
    assert fixed and "image_url" in fixed[1] and "seed" not in fixed[1]
    # no file of those bytes is known here: named by its sha256, and said to be missing
    assert "sha256:9c1e9c1e9c1e…" in fixed[1] and "missing" in fixed[1]


def test_end_to_end_from_a_real_run(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png_bytes())
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "endpoint": "fal-ai/flux-1/dev/image-to-image",
                "defaults": {
                    "image_url": "images/a.png",
                    "prompt": "a red square",
                    "num_inference_steps": 10,
                },
                "matrix": {"strength": [0.5, 0.9], "seed": [1, 2]},
            },
            sort_keys=False,
        )
    )
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    summary = write_report(out)
    assert (summary.ok, summary.failed, summary.pending) == (4, 0, 0)
    assert (summary.rows, summary.columns) == ("strength", "seed")
    page = summary.path.read_text()
    rows = grid_rows(page)
    assert rows[0][1:] == ["1", "2"] and [r[0] for r in rows[1:]] == ["0.5", "0.9"]
    for row in rows[1:]:
        for cell in row[1:]:
            src = re.search(r'<img [^>]*src="([^"]+)"', cell)
            assert src and (out / src[1]).is_file()
    assert "<h1>sweep</h1>" in page and "a red square" in page


def test_the_report_line_says_how_many_images_are_missing(tmp_path, capsys):
    """An ok row whose image was deleted shows as `missing` inside the page; the command line
    must say so too, rather than a clean "4 ok" over a report that links to nothing."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png_bytes())
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "endpoint": "fal-ai/flux-1/dev/image-to-image",
                "defaults": {"image_url": "images/a.png", "prompt": "p", "num_inference_steps": 10},
                "matrix": {"seed": [1, 2]},
            }
        )
    )
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    gone = [p for p in (out / "images").rglob("*.*") if p.is_file()][0]
    gone.unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 ok, 0 failed, 0 pending, 1 image missing" in printed
    assert write_report(out).missing == 1
