"""The records a request in flight writes: a local input is traceable to its file (path beside
the sha256 that stands for it in `input`); remote inputs carry no path."""

from __future__ import annotations

import hashlib
from pathlib import Path

from runner.cli.commands import main

from .conftest import last_records, png_bytes


def test_every_line_of_a_local_input_names_its_file(write_spec, tmp_path, capsys):
    (tmp_path / "images" / "b.png").write_bytes(png_bytes(20, 20, (0, 90, 200)))
    spec = write_spec(matrix={"image_url": {"files": "images/*.png"}})
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    records = last_records(out)
    assert len(records) == 2
    for record in records.values():
        path = Path(record["input_files"]["image_url"])
        assert path.is_absolute() and path.parent == tmp_path / "images"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert record["input"]["image_url"] == f"sha256:{digest}"
    assert {Path(r["input_files"]["image_url"]).name for r in records.values()} == {
        "a.png",
        "b.png",
    }
    lines = (out / "manifest.jsonl").read_text().splitlines()
    full = [line for line in lines if '"input":' in line]  # lean lines inherit it when merged
    assert len(full) == 2 and all('"input_files"' in line for line in full)


def test_a_url_input_has_no_input_files(write_spec, tmp_path, capsys):
    spec = write_spec(defaults={"image_url": "data:image/png;base64,iVBORw0KGgo="})
    out = tmp_path / "out"
    main(["run", str(spec), "--out", str(out), "--no-progress"])
    (record,) = last_records(out).values()
    assert "input_files" not in record
