"""The layout that lets one folder hold a million requests, shown on a few rows: images in
sub-folders by key prefix, one full journal line per key (lean lines after it), damaged outputs
found in the journal's one read; and folders from before that layout still resume and report.
The million-row tests themselves are in test_grid and test_sources (marked slow)."""

from __future__ import annotations

import json
import shutil

from runner.report import write_report

from .conftest import last_records
from .test_executor import run, settings_for


def to_old_layout(out):
    """Rewrite a finished run folder as the runner wrote it before: images flat in images/,
    every journal line the whole record with input first."""
    current: dict[str, dict] = {}
    lines = []
    for text in (out / "manifest.jsonl").read_text().splitlines():
        line = json.loads(text)
        if "input" in line:
            current[line["key"]] = {}
        record = current[line["key"]]
        record.update(line)
        for output in record.get("outputs", []):
            flat = "images/" + output["file"].rsplit("/", 1)[1]
            if output["file"] != flat:
                shutil.move(out / output["file"], out / flat)
                output["file"] = flat
        first = ("key", "endpoint", "backend", "run_id", "input", "vars")
        lines.append({**{k: record[k] for k in first}, **record})
    with (out / "manifest.jsonl").open("w") as fh:
        fh.writelines(json.dumps(line) + "\n" for line in lines)
    for folder in (out / "images").iterdir():
        if folder.is_dir():
            folder.rmdir()


async def test_a_run_writes_one_full_line_per_key_and_images_in_sub_folders(
    write_spec, emulator_factory, tmp_path
):
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [0, 7]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=4)
    await run(settings, requests, em)
    lines = [
        json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().split("\n")[:-1]
    ]
    assert len(lines) == 24 and sum("input" in line for line in lines) == 8
    for record in last_records(tmp_path / "out").values():
        file = record["outputs"][0]["file"]
        assert file == f"images/{record['key'][:2]}/{record['key']}-0.jpg"
        assert (tmp_path / "out" / file).is_file()


async def test_an_old_flat_run_folder_resumes_and_reports(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [0, 5]}})
    out = tmp_path / "out"
    settings, requests = settings_for(spec, out, concurrency=3)
    stats = await run(settings, requests[:4], em)  # two rows left for the resume
    assert stats.ok == 4
    to_old_layout(out)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        f"{r.key}-0.jpg" for r in requests[:4]
    )
    again = await run(settings, requests, em)
    assert (again.skipped, again.ok, again.submitted) == (4, 2, 2)
    assert em.stats.submissions == 6
    records = last_records(out)
    assert all(r["status"] == "ok" for r in records.values()) and len(records) == 6
    page = write_report(out).path.read_text()
    for request in requests:
        record = records[request.key]
        assert (out / record["outputs"][0]["file"]).is_file()
        assert record["outputs"][0]["file"] in page
    assert sum("/" in r["outputs"][0]["file"][len("images/") :] for r in records.values()) == 2


async def test_the_journal_read_finds_damaged_outputs_in_the_same_pass(
    write_spec, emulator_factory, tmp_path, monkeypatch
):
    from runner.execution.repair import find_damaged
    from runner.folder.journal import Journal

    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [0, 5]}})
    out = tmp_path / "out"
    settings, requests = settings_for(spec, out, concurrency=3)
    await run(settings, requests, em)
    records = last_records(out)
    gone, short = (records[r.key]["outputs"][0]["file"] for r in requests[:2])
    (out / gone).unlink()
    (out / short).write_bytes(b"short")
    expected = {requests[0].key, requests[1].key}
    for helper in (False, True):  # checked in this process, and by a helper process
        monkeypatch.setattr("runner.folder.journal.HELPER_FROM", 0 if helper else 1 << 40)
        journal = Journal(out, check_outputs=True)
        journal.close()
        assert journal.damaged == expected
    assert set(find_damaged(out, journal.damaged)) == expected
