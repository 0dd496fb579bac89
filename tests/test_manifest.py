import json
import os

import pytest

from runner.errors import ManifestError
from runner.manifest import FAILED, OK, SUBMITTED, Journal, append_run, latest, read_records


def test_last_line_wins_and_state_survives_reopen(tmp_path):
    journal = Journal(tmp_path)
    journal.append({"key": "a", "status": SUBMITTED, "request_id": "r1", "attempts": 1})
    journal.append(
        {
            "key": "b",
            "status": FAILED,
            "attempts": 1,
            "error": {"type": "validation", "message": "x", "http_status": 422},
        }
    )
    journal.append({"key": "a", "status": OK, "request_id": "r1", "attempts": 1})
    journal.close()
    again = Journal(tmp_path)
    assert again.state("a").status == OK
    assert again.state("b").error_type == "validation"
    again.close()
    assert [r["status"] for r in latest(tmp_path).values()] == [OK, FAILED]
    assert all("time" in r for r in read_records(tmp_path))


def test_torn_last_line_is_ignored_and_cut(tmp_path):
    journal = Journal(tmp_path)
    journal.append({"key": "a", "status": SUBMITTED, "request_id": "r1"})
    journal.close()
    with (tmp_path / "manifest.jsonl").open("ab") as fh:
        fh.write(b'{"key": "b", "status": "ok", "outp')  # kill -9 mid-write
    reopened = Journal(tmp_path)
    assert reopened.state("b") is None
    reopened.append({"key": "c", "status": OK})
    reopened.close()
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "c"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_is_a_manifest_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ManifestError, match="cannot write"):
            Journal(tmp_path / "out")
    finally:
        tmp_path.chmod(0o700)


def test_output_path_that_is_a_file_is_a_manifest_error(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(ManifestError, match="cannot write to the output folder"):
        Journal(tmp_path / "out")


def test_disk_full_is_a_manifest_error(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    journal = Journal(tmp_path)
    journal._fh.close()
    journal._fh = open("/dev/full", "ab")  # noqa: SIM115 - every write fails with ENOSPC
    with pytest.raises(ManifestError, match="No space left"):
        journal.append({"key": "a", "status": OK})
    journal.close()


def test_runs_file(tmp_path):
    append_run(tmp_path, {"run_id": "x", "spec_sha256": "abc"})
    assert json.loads((tmp_path / "runs.jsonl").read_text())["spec_sha256"] == "abc"
