"""`runner export`: one real run (local, data: and remote inputs, several outputs, a failure),
exported in every format and loaded with each format's real reader."""

from __future__ import annotations

import base64
import csv
import gc
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import sys
import tarfile
import warnings
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from PIL import Image

from runner.cli.commands import main
from runner.export import export
from runner.folder.journal import latest

from .conftest import png_bytes
from .test_merge import kill_mid_way, start_slowed

# The readers under test must never reach for the Hub: everything here is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

DATA_PNG = png_bytes(20, 10, (10, 200, 10))
DATA_URI = "data:image/png;base64," + base64.b64encode(DATA_PNG).decode()
DATA_REF = "sha256:" + hashlib.sha256(DATA_PNG).hexdigest()
REMOTE = "https://example.invalid/x.png"  # the offline emulator refuses it: a failed row


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run: 2 inputs x 2 strengths ok (one row with 2 images), 2 remote rows failed."""
    root = tmp_path_factory.mktemp("export")
    (root / "images").mkdir()
    (root / "images" / "a.png").write_bytes(png_bytes())
    spec = root / "sweep.yaml"
    doc = {
        "version": 1,
        "name": "pairs",
        "endpoint": "fal-ai/flux-1/dev/image-to-image",
        "defaults": {"prompt": "a {animal} in the rain", "num_inference_steps": 10},
        "matrix": {
            "image_url": ["images/a.png", DATA_URI, REMOTE],
            "strength": [0.5, 0.9],
            "animal": ["cat"],
        },
        "include": [
            {"image_url": "images/a.png", "strength": 0.7, "animal": "owl", "num_images": 2}
        ],
    }
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = root / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 1  # remote rows fail
    # what the tests below count on, checked here: a different run would make them pass or
    # fail for the wrong reason
    statuses = [r["status"] for r in latest(out).values()]
    assert statuses.count("ok") == 5 and statuses.count("failed") == 2
    assert len(ok_outputs(out)) == 6
    return out


def load(fmt: str, dest: Path, tmp_path: Path) -> Any:
    from datasets import load_dataset

    kwargs: dict[str, Any] = {"split": "train", "cache_dir": str(tmp_path / "hf-cache")}
    return load_dataset(fmt, data_dir=str(dest), **kwargs)


def ok_outputs(out: Path) -> list[tuple[dict[str, Any], int]]:
    """(record, output index) for every output image of an ok record, in journal order."""
    return [
        (r, i)
        for r in latest(out).values()
        if r["status"] == "ok"
        for i in range(len(r["outputs"]))
    ]


def size(record: dict[str, Any], index: int) -> tuple[int, int]:
    output = record["outputs"][index]
    return output["width"], output["height"]


def test_imagefolder_loads_as_image_pairs_with_every_field(run, tmp_path, capsys):
    dest = tmp_path / "ds"
    assert main(["export", str(run), "--format", "imagefolder", "--to", str(dest)]) == 0
    assert "6 rows (6 output images, 6 input images" in capsys.readouterr().out
    data = load("imagefolder", dest, tmp_path)
    assert type(data.features["image"]).__name__ == "Image"
    assert type(data.features["input"]).__name__ == "Image"
    expected = ok_outputs(run)
    assert len(data) == len(expected)
    for row, (record, index) in zip(data, expected, strict=True):
        assert (row["key"], row["output_index"]) == (record["key"], index)
        assert row["prompt"] == record["input"]["prompt"]  # rendered, not the template
        assert row["strength"] == record["input"]["strength"]
        assert row["animal"] == record["vars"]["animal"]  # a variable that is no field
        with Image.open(run / record["outputs"][index]["file"]) as original:
            assert row["image"].size == original.size
            assert row["image"].convert("RGB").tobytes() == original.convert("RGB").tobytes()
        # the journal names inline data by its sha256, never by its bytes
        from_data_uri = record["input"]["image_url"] == DATA_REF
        assert row["input"].size == ((20, 10) if from_data_uri else (48, 32))
    assert sum(r["num_images"] == 2 for r in data) == 2  # one request, two output rows


def test_imagefolder_keeps_folders_small_and_writes_each_input_once(run, tmp_path):
    dest = tmp_path / "ds"
    export(run, "imagefolder", dest, folder_files=4)
    folders = [p for p in (dest / "train" / "images").iterdir()]
    assert sorted(len(list(f.iterdir())) for f in folders) == [2, 4]
    assert len(list((dest / "train" / "inputs").rglob("*.png"))) == 2  # a.png and the data: URI
    assert len(load("imagefolder", dest, tmp_path)) == 6


def test_status_all_keeps_failed_rows_and_remote_urls(run, tmp_path):
    dest = tmp_path / "ds"
    summary = export(run, "imagefolder", dest, status="all")
    assert (summary.rows, summary.images, summary.input_urls) == (8, 6, 2)
    data = load("imagefolder", dest, tmp_path)
    failed = [r for r in data if r["status"] == "failed"]
    assert len(failed) == 2
    for row in failed:
        assert row["image"] is None and row["input"] is None  # export never fetches
        assert row["image_url"] == REMOTE and row["error_type"]


def test_parquet_shards_load_with_datasets_and_pyarrow(run, tmp_path, capsys):
    dest = tmp_path / "pq"
    argv = ["export", str(run), "--format", "parquet", "--to", str(dest), "--shard-size", "4"]
    assert main(argv) == 0
    names = sorted(p.name for p in (dest / "data").iterdir())
    assert names == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    table = pq.read_table(dest / "data")
    assert table.num_rows == 6 and table.schema.field("image").type.names == ["bytes", "path"]
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"} and features["input"] == {"_type": "Image"}
    data = load("parquet", dest, tmp_path)
    assert type(data.features["image"]).__name__ == "Image" and len(data) == 6
    expected = ok_outputs(run)
    for row, (record, index) in zip(data, expected, strict=True):
        assert (row["key"], row["output_index"]) == (record["key"], index)
        assert row["image"].size == size(record, index)
        assert row["input"] is not None


def test_parquet_row_groups_hold_100_rows(tmp_path):
    out = tmp_path / "out"
    records = [_record(out, f"k{i:03d}", {"seed": i}) for i in range(250)]
    _write(out, records)
    export(out, "parquet", tmp_path / "pq")
    meta = pq.ParquetFile(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [100, 100, 50]


def test_parquet_without_pyarrow_is_a_one_line_usage_error(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    dest = tmp_path / "pq"
    assert main(["export", str(run), "--format", "parquet", "--to", str(dest)]) == 2
    err = capsys.readouterr().err
    # the install hint names this project's distribution, not `runner` (another PyPI project)
    assert err.strip() == (
        "runner: --format parquet needs pyarrow: pip install 'fal-batch-runner[export]' "
        "(installed with pipx: pipx inject fal-batch-runner pyarrow)"
    )


def test_webdataset_shards_load_with_webdataset(run, tmp_path):
    dest = tmp_path / "wds"
    export(run, "webdataset", dest, shard_size=4)
    shards = sorted(str(p) for p in dest.glob("*.tar"))
    assert [Path(s).name for s in shards] == ["00000.tar", "00001.tar"]
    with warnings.catch_warnings():  # webdataset 1.0 leaves its shard files to the collector
        warnings.simplefilter("ignore", ResourceWarning)
        samples = list(wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode("pil"))
        gc.collect()
    expected = ok_outputs(run)
    assert len(samples) == len(expected)
    for sample, (record, index) in zip(samples, expected, strict=True):
        assert sample["__key__"] == f"{record['key']}-{index}"
        assert sample["json"]["key"] == record["key"]
        assert sample["json"]["strength"] == record["input"]["strength"]
        output = next(v for k, v in sample.items() if k.startswith("output."))
        assert output.size == size(record, index)
        assert "input.png" in sample
    with tarfile.open(shards[0]) as tar:  # a sample's members are adjacent, keys have no dots
        keys = [m.name.split(".", 1)[0] for m in tar.getmembers()]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert runs == list(dict.fromkeys(keys)) and all("." not in k for k in keys)


def test_webdataset_loads_with_datasets(run, tmp_path):
    dest = tmp_path / "wds"
    export(run, "webdataset", dest)
    data = load("webdataset", dest, tmp_path)
    assert len(data) == 6 and {"json", "input.png"} <= set(data.features)
    assert type(data.features["input.png"]).__name__ == "Image"
    assert [r["json"]["key"] for r in data] == [r["key"] for r, _ in ok_outputs(run)]


def test_webdataset_with_failed_rows_reads_with_webdataset(run, tmp_path):
    dest = tmp_path / "wds"
    export(run, "webdataset", dest, status="all")
    with warnings.catch_warnings():  # webdataset 1.0 leaves its shard files to the collector
        warnings.simplefilter("ignore", ResourceWarning)
        samples = list(wds.WebDataset(str(dest / "00000.tar"), shardshuffle=False))
        gc.collect()
    assert len(samples) == 8
    failed = [s for s in samples if not any(k.startswith("output.") for k in s)]
    assert len(failed) == 2 and all(json.loads(s["json"])["status"] == "failed" for s in failed)


def test_csv_and_jsonl_are_one_file_of_paths(run, tmp_path):
    export(run, "csv", tmp_path / "rows.csv", status="all")
    export(run, "jsonl", tmp_path / "rows.jsonl", status="all")
    with (tmp_path / "rows.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    lines = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == len(lines) == 8
    for row, line in zip(rows, lines, strict=True):
        assert row["key"] == line["key"]
        if line["status"] == "ok":
            assert Path(line["image"]).is_file() and Path(row["image"]) == Path(line["image"])
        else:
            assert line["image"] is None and row["image"] == "" and line["error_message"]
    local = [line for line in lines if line["var_image_url"] == "images/a.png"]
    assert local and all(Path(line["input"]).read_bytes() == png_bytes() for line in local)
    data_rows = [line for line in lines if line["image_url"].startswith("sha256:")]
    assert all(not line["image_url"].startswith("data:") for line in lines) and data_rows


def test_an_export_never_mixes_with_an_older_one(run, tmp_path, capsys):
    dest = tmp_path / "ds"
    dest.mkdir()
    (dest / "old.txt").write_text("x")
    assert main(["export", str(run), "--format", "webdataset", "--to", str(dest)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    missing = tmp_path / "nothing"
    assert main(["export", str(missing), "--format", "csv", "--to", str(tmp_path / "a.csv")]) == 2


def test_a_run_in_progress_exports_what_is_ok_now(tmp_path):
    out = tmp_path / "out"
    records = [_record(out, "k1", {"seed": 1}), _record(out, "k2", {"seed": 2}, status="submitted")]
    _write(out, records)
    _write(out, [_record(out, "k2", {"seed": 2}, status="submitting")])
    with (out / "manifest.jsonl").open("a") as fh:
        fh.write('{"key": "k3", "status": "ok", "outp')  # a line being written right now
    summary = export(out, "jsonl", tmp_path / "rows.jsonl")
    assert summary.rows == 1
    all_rows = export(out, "jsonl", tmp_path / "all.jsonl", status="all")
    assert all_rows.rows == 2


def test_a_moved_local_input_is_an_empty_input_column(tmp_path, capsys):
    out = tmp_path / "out"
    rec = _record(out, "k1", {"seed": 1})
    rec["vars"]["image_url"] = "gone.png"
    _write(out, [rec])
    assert main(["export", str(out), "--format", "jsonl", "--to", str(tmp_path / "r.jsonl")]) == 0
    assert "1 row has a local input whose file was not found" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.jsonl").read_text())["input"] is None


def _record(out: Path, key: str, vars: dict[str, Any], status: str = "ok") -> dict[str, Any]:
    rec: dict[str, Any] = {
        "key": key,
        "status": status,
        "endpoint": "fal-ai/flux-1/dev/image-to-image",
        "backend": "local",
        "input": {"image_url": "sha256:" + "ab" * 32, "prompt": "p", **vars},
        "vars": dict(vars),
    }
    if status == "ok":
        (out / "images").mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.new("RGB", (8, 6), (1, 2, 3)).save(buf, "PNG")
        (out / "images" / f"{key}-0.png").write_bytes(buf.getvalue())
        rec["outputs"] = [
            {
                "file": f"images/{key}-0.png",
                "sha256": "x",
                "width": 8,
                "height": 6,
                "content_type": "image/png",
            }
        ]
    return rec


def _write(out: Path, records: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "manifest.jsonl").open("a") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")


def test_the_docs_export_snippets_work_from_the_repository_root(tmp_path, monkeypatch, capsys):
    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "results.md").read_text(encoding="utf-8")
    section = text.split("## Export a run as a dataset", 1)[1].split("\n## ", 1)[0]
    commands = [
        line
        for block in re.findall(r"```sh\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.startswith("runner ")
    ]
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(commands) == 5 and len(snippets) == 4
    shutil.copytree(root / "specs", tmp_path / "specs", ignore=shutil.ignore_patterns("runs"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "hf-cache")
    assert main(["run", "specs/sweep.yaml", "--no-progress"]) == 0
    for command in commands:
        assert main(shlex.split(command.split("#")[0])[1:]) == 0, command
    capsys.readouterr()
    for snippet in snippets:
        with warnings.catch_warnings():  # webdataset 1.0 leaves its shard files to the collector
            warnings.simplefilter("ignore", ResourceWarning)
            exec(compile(snippet, "docs/results.md", "exec"), {})
            gc.collect()
    printed = capsys.readouterr().out
    assert "(96, 64)" in printed and "Image(" in printed and "sha256:" not in printed


def test_the_journal_s_input_files_path_finds_the_input(tmp_path):
    image = tmp_path / "elsewhere" / "in.png"
    image.parent.mkdir()
    image.write_bytes(png_bytes())
    out = tmp_path / "out"
    rec = _record(out, "k1", {"seed": 1})
    rec["input"]["image_url"] = "sha256:" + hashlib.sha256(png_bytes()).hexdigest()
    rec["input_files"] = {"image_url": str(image)}
    _write(out, [rec])
    summary = export(out, "jsonl", tmp_path / "r.jsonl")
    assert (summary.inputs, summary.missing_inputs) == (1, 0)
    assert json.loads((tmp_path / "r.jsonl").read_text())["input"] == str(image)


def test_nothing_to_export_is_a_usage_error(run, tmp_path, capsys):
    dest = str(tmp_path / "ds")
    argv = ["export", str(run), "--format", "imagefolder", "--to", dest, "--status", "failed"]
    assert main(argv) == 2
    assert "needs rows with an output image; for failed requests use" in capsys.readouterr().err
    assert export(run, "jsonl", tmp_path / "f.jsonl", status="failed").rows == 2
    empty = tmp_path / "empty"
    _write(empty, [_record(empty, "k1", {"seed": 1}, status="submitted")])
    assert main(["export", str(empty), "--format", "csv", "--to", str(tmp_path / "e.csv")]) == 2
    assert "nothing to export: no ok requests in" in capsys.readouterr().err


def test_a_damaged_output_image_is_left_out_and_counted(run, tmp_path, capsys):
    """An output file changed since the run (same size, one byte flipped) is no longer the
    journaled result: exporting it would poison the dataset, so its image is left empty."""
    out = tmp_path / "out"
    shutil.copytree(run, out)
    record, index = ok_outputs(out)[0]
    damaged = out / record["outputs"][index]["file"]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    dest = tmp_path / "rows.jsonl"
    assert main(["export", str(out), "--format", "jsonl", "--to", str(dest)]) == 0
    assert "1 ok row has no intact image file" in capsys.readouterr().err
    rows = {
        (r["key"], r["output_index"]): r for r in map(json.loads, dest.read_text().splitlines())
    }
    assert rows[(record["key"], index)]["image"] is None
    assert sum(r["image"] is not None for r in rows.values()) == len(ok_outputs(run)) - 1


@pytest.mark.parametrize("target", ["manifest.jsonl", "runs.jsonl", "rows.csv", "ds"])
def test_an_export_never_writes_into_the_run_folder(run, tmp_path, capsys, target):
    """`--to OUT/manifest.jsonl` replaced the journal with a csv: every paid result's record
    gone. Nothing of an export goes inside the run folder it reads."""
    out = tmp_path / "out"
    shutil.copytree(run, out)
    journal = (out / "manifest.jsonl").read_bytes()
    fmt = "imagefolder" if target == "ds" else "csv"
    assert main(["export", str(out), "--format", fmt, "--to", str(out / target)]) == 2
    assert "inside the run folder" in capsys.readouterr().err
    assert (out / "manifest.jsonl").read_bytes() == journal
    assert not (out / "rows.csv").exists() and not (out / "ds").exists()


def test_every_variable_has_a_column_of_its_own(tmp_path):
    """A variable renamed away from a reserved name (`key` -> `var_key`) never takes the column
    of a variable already called that: the made name gets the prefix again."""
    out = tmp_path / "out"
    rec = _record(out, "k1", {"seed": 1})
    rec["vars"].update({"key": "mine", "var_key": "theirs", "var_var_key": "third"})
    rec["vars"]["image_url"] = "photo.png"  # an axis value beside its field: var_image_url
    rec["vars"]["var_image_url"] = "named so"
    _write(out, [rec])
    export(out, "jsonl", tmp_path / "rows.jsonl")
    row = json.loads((tmp_path / "rows.jsonl").read_text())
    assert row["key"] == "k1" and row["var_key"] == "theirs" and row["var_var_key"] == "third"
    assert row["var_var_var_key"] == "mine"
    assert row["var_image_url"] == "named so" and row["var_var_image_url"] == "photo.png"


@pytest.mark.parametrize(
    "fmt, dest, slowed",
    [
        ("parquet", "pq", "runner.export.parquet:_record"),
        ("webdataset", "wds", "runner.export.webdataset:_add_sample"),
        ("imagefolder", "ds", "runner.export.files:Placer.place"),
        ("csv", "rows.csv", "runner.export.tables:_path"),
    ],
)
def test_a_killed_export_leaves_nothing_and_a_rerun_succeeds(tmp_path, fmt, dest, slowed):
    """kill -9 mid-export: DEST is absent (never a truncated shard or half a file under its
    name), and the same command again writes it whole and removes the dead one's leftovers."""
    out = tmp_path / "out"
    _write(out, [_record(out, f"k{i:03d}", {"seed": i}) for i in range(60)])
    parent = tmp_path / "exports"
    parent.mkdir()
    argv = ["export", str(out), "--format", fmt, "--to", str(parent / dest), "--shard-size", "20"]
    kill_mid_way(start_slowed(slowed, 0.04, *argv), parent)
    assert not (parent / dest).exists()
    assert all(p.name.startswith(".") for p in parent.iterdir())  # nothing a glob picks up
    assert main(argv) == 0
    assert [p.name for p in parent.iterdir()] == [dest]
    assert export(out, fmt, tmp_path / f"again-{dest}", shard_size=20).rows == 60


def test_a_file_where_a_folder_is_needed_and_the_reverse(run, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    argv = ["export", str(run), "--format", "imagefolder", "--to", str(tmp_path / "afile")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "afile is a file; --format imagefolder writes a folder" in err
    (tmp_path / "adir").mkdir()
    assert main(["export", str(run), "--format", "csv", "--to", str(tmp_path / "adir")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "adir is a folder; --format csv writes one file" in err


def test_an_empty_folder_is_filled_but_never_the_working_folder(run, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(run, "webdataset", empty).rows == 6 and (empty / "00000.tar").is_file()
    monkeypatch.chdir(empty.parent)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert main(["export", str(run), "--format", "parquet", "--to", "."]) == 2
    assert not any((tmp_path / "here").iterdir())


def test_counts_of_one_are_singular(tmp_path, capsys):
    out = tmp_path / "out"
    rec = _record(out, "k1", {"seed": 1})
    rec["outputs"][0]["sha256"] = "0" * 64  # not the file's: its image is not intact
    _write(out, [rec])
    assert main(["export", str(out), "--format", "jsonl", "--to", str(tmp_path / "r.jsonl")]) == 0
    captured = capsys.readouterr()
    assert "r.jsonl: 1 row (0 output images, 0 input images, 0 remote input URLs)" in captured.out
    assert "1 row has a local input whose file was not found" in captured.err
    assert (
        "1 ok row has no intact image file" in captured.err and "its image column" in captured.err
    )


def test_export_and_report_agree_on_what_is_intact(run, tmp_path, capsys):
    """One check serves both: an output changed at the same size and an inline input edited
    where the run kept it are left out of the export and marked, not shown, by the report."""
    from runner.report import write_report

    out = tmp_path / "out"
    shutil.copytree(run, out)
    record, index = ok_outputs(out)[0]
    damaged = out / record["outputs"][index]["file"]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (kept,) = (out / "inputs").iterdir()  # the data: URI's bytes, kept by the run
    kept.write_bytes(png_bytes(20, 10, (1, 2, 3)))
    dest = tmp_path / "rows.jsonl"
    assert main(["export", str(out), "--format", "jsonl", "--to", str(dest)]) == 0
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    left_out = {r["key"] for r in rows if r["input"] is None or r["image"] is None}
    summary = write_report(out)
    page = summary.path.read_text()
    assert summary.changed == 1
    assert not re.search(rf'(src|href)="[^"]*{damaged.name}"', page)  # said, never linked
    assert [(n.state, n.requests) for n in summary.inputs] == [("changed", 2)]
    cells = page.split("<main>")[1].split("</main>")[0].split('id="t-')[1:]
    marked = {cell[:16] for cell in cells if "changed since the run" in cell}
    assert left_out == marked | {record["key"]}
