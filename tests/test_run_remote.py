"""http(s) inputs with the offline backend: validate/plan/run warn that the emulator will not
fetch them, and `runner run --allow-remote-fetch` lets it (tested against a loopback server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runner.cli.commands import main

from .conftest import last_records, png_bytes

PNG = png_bytes(40, 24)


class _Images(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def image_url() -> Iterator[str]:
    """The URL of a PNG served over plain http on a loopback port of its own."""
    _Images.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/photo.png"
    finally:
        server.shutdown()
        server.server_close()


def test_validate_and_plan_warn_that_the_emulator_will_not_fetch(write_spec, image_url, capsys):
    spec = write_spec(defaults={"image_url": image_url}, matrix={"seed": [1, 2]})
    assert main(["validate", str(spec)]) == 0
    captured = capsys.readouterr()
    assert "ok, 2 requests" in captured.out
    assert "2 requests have an http(s) image URL" in captured.err
    assert "--allow-remote-fetch" in captured.err
    assert main(["plan", str(spec)]) == 0
    assert "--allow-remote-fetch" in capsys.readouterr().err
    local = write_spec("local.yaml", matrix={"seed": [1, 2]})
    assert main(["validate", str(local)]) == 0
    assert capsys.readouterr().err == ""  # local files: nothing to warn about
    fal = write_spec("fal.yaml", defaults={"image_url": image_url}, backend="fal")
    assert main(["plan", str(fal)]) == 0
    assert "warning" not in capsys.readouterr().err  # fal fetches URLs itself


def test_offline_run_refuses_remote_inputs_by_default(write_spec, image_url, tmp_path, capsys):
    spec = write_spec(defaults={"image_url": image_url})
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 1
    assert "--allow-remote-fetch" in capsys.readouterr().err
    (record,) = last_records(out).values()
    assert record["status"] == "failed" and record["error"]["http_status"] == 422
    assert "remote fetch is off" in record["error"]["message"]
    assert _Images.hits == []  # nothing went to the network


def test_allow_remote_fetch_lets_the_emulator_download(write_spec, image_url, tmp_path, capsys):
    spec = write_spec(defaults={"image_url": image_url}, matrix={"seed": [1, 2]})
    out = tmp_path / "out"
    argv = ["run", str(spec), "--out", str(out), "--no-progress", "--allow-remote-fetch"]
    assert main(argv) == 0
    assert "warning" not in capsys.readouterr().err
    records = last_records(out)
    assert [r["status"] for r in records.values()] == ["ok", "ok"]
    assert all(r["input"]["image_url"] == image_url for r in records.values())
    assert _Images.hits == ["/photo.png", "/photo.png"]
