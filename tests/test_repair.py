"""Missing outputs: an `ok` row whose file is gone is fetched again from its recorded URL, or
reported and marked failed when it cannot be; never silently "done"."""

from __future__ import annotations

import hashlib
import json

from runner.cli.commands import main

from .conftest import ThreadedEmulator, last_records


def _run(spec, out, *more):
    return main(["run", str(spec), "--out", str(out), "--no-progress", *more])


def test_a_deleted_output_is_fetched_again(write_spec, tmp_path, fal_server, capsys):
    server = fal_server()
    spec = write_spec(matrix={"seed": [1, 2]}, backend="fal")
    out = tmp_path / "out"
    assert _run(spec, out) == 0
    record = next(iter(last_records(out).values()))
    output = record["outputs"][0]
    assert output["url"].startswith("http") and output["bytes"] > 0
    (out / output["file"]).unlink()
    capsys.readouterr()
    assert _run(spec, out) == 0
    assert "1 missing output fetched again" in capsys.readouterr().out
    data = (out / output["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == output["sha256"]
    assert server.stats.submissions == 2  # fetched, not paid again
    assert last_records(out)[record["key"]]["status"] == "ok"


def test_an_output_that_cannot_be_fetched_is_reported_not_hidden(
    write_spec, tmp_path, fal_server, capsys
):
    server = fal_server()
    # sync_mode: outputs come back as data: URIs, which the manifest does not store
    spec = write_spec(matrix={"seed": [1, 2]}, defaults={"sync_mode": True}, backend="fal")
    out = tmp_path / "out"
    assert _run(spec, out) == 0
    record = next(iter(last_records(out).values()))
    assert record["outputs"][0]["url"] is None
    with open(out / record["outputs"][0]["file"], "r+b") as fh:
        fh.truncate(10)  # damaged: the wrong size
    capsys.readouterr()
    assert _run(spec, out) == 1
    printed = capsys.readouterr()
    assert "1 output lost (marked failed)" in printed.out and "--retry-failed" in printed.err
    lost = last_records(out)[record["key"]]
    assert lost["status"] == "failed" and lost["error"]["type"] == "output_lost"
    assert _run(spec, out, "--retry-failed") == 0
    assert server.stats.submissions == 3


def test_offline_outputs_die_with_the_emulator_and_retry_failed_makes_them_again(
    write_spec, tmp_path, capsys
):
    spec = write_spec(matrix={"seed": [1, 2]})  # backend local: a fresh emulator each run
    out = tmp_path / "out"
    assert _run(spec, out) == 0
    for record in last_records(out).values():
        (out / record["outputs"][0]["file"]).unlink()
    capsys.readouterr()
    assert _run(spec, out) == 1  # its URLs are gone with it: reported, never "done"
    assert "2 outputs lost (marked failed)" in capsys.readouterr().out
    assert _run(spec, out, "--retry-failed") == 0
    for record in last_records(out).values():
        assert (out / record["outputs"][0]["file"]).is_file()


def test_a_refetch_the_server_fails_keeps_the_row_and_its_url_for_the_next_run(
    write_spec, tmp_path, fal_server, capsys
):
    from dataclasses import replace

    from runner.emulator import Faults

    server = fal_server()
    spec = write_spec(matrix={"seed": [1, 2]}, backend="fal")
    out = tmp_path / "out"
    assert _run(spec, out) == 0
    record = next(iter(last_records(out).values()))
    (out / record["outputs"][0]["file"]).unlink()
    journal = (out / "manifest.jsonl").read_bytes()
    settings = server.emulator._state.settings
    # the file host answers 503: the server's trouble, not the file's
    server.emulator._state.settings = replace(
        settings, faults=Faults(p_503_ingress=1.0, routes=frozenset({"file"}))
    )
    capsys.readouterr()
    assert _run(spec, out) == 3  # resumable, as when the server cannot be reached
    printed = capsys.readouterr()
    assert "1 missing output not fetched now" in printed.out
    assert "runner: 1 missing output could not be fetched now (download answered HTTP 503" in (
        printed.err
    )
    assert "its row stays ok with its URL: run the same command again to fetch it" in printed.err
    assert (out / "manifest.jsonl").read_bytes() == journal  # nothing marked, nothing forgotten
    assert json.loads((out / "stats.json").read_text())["counts"]["outputs_not_fetched"] == 1
    server.emulator._state.settings = settings
    assert _run(spec, out) == 0
    assert "1 missing output fetched again" in capsys.readouterr().out
    assert (out / record["outputs"][0]["file"]).is_file()
    assert server.stats.submissions == 2  # fetched, never paid again


def test_a_refetch_from_a_server_that_is_down_marks_nothing_lost(
    write_spec, tmp_path, monkeypatch, capsys
):
    server = ThreadedEmulator()
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    spec = write_spec(matrix={"seed": [1]}, backend="fal")
    out = tmp_path / "out"
    try:
        assert _run(spec, out) == 0
    finally:
        server.close()  # the server and its files are unreachable now
    record = next(iter(last_records(out).values()))
    (out / record["outputs"][0]["file"]).unlink()
    capsys.readouterr()
    assert _run(spec, out) == 3
    assert "could not be fetched now (download from http://127.0.0.1:" in capsys.readouterr().err
    assert last_records(out)[record["key"]] == record  # still ok, its URL kept


def test_a_file_the_server_no_longer_has_is_marked_lost(write_spec, tmp_path, fal_server, capsys):
    server = fal_server()
    spec = write_spec(matrix={"seed": [1]}, backend="fal")
    out = tmp_path / "out"
    assert _run(spec, out) == 0
    record = next(iter(last_records(out).values()))
    (out / record["outputs"][0]["file"]).unlink()
    server.emulator._state.files.clear()  # past its retention: answered 404
    capsys.readouterr()
    assert _run(spec, out) == 1
    assert "1 output lost (marked failed)" in capsys.readouterr().out
    lost = last_records(out)[record["key"]]
    assert lost["error"]["type"] == "output_lost" and "404" in lost["error"]["message"]
