"""runner plan's estimates: megapixels billed, the cost basis in words, URL inputs of unknown
size, and the time on fal at the chosen concurrency (from the endpoint file's assumptions)."""

from __future__ import annotations

import base64
import json

from runner.cli.commands import main
from runner.endpoints import get_endpoint
from runner.grid.plan import Plan, explain_cost

from .conftest import png_bytes

FLUX = get_endpoint("fal-ai/flux-1/dev/image-to-image")


def test_cost_basis_and_time_are_explained(write_spec, capsys):
    # 8 requests, one 48x32 input (1 MP when rounded up), 20 steps, concurrency 4:
    # 8 x 5 s x 20/40 = 20 s of work, 5 s of wall time at 4 at once.
    spec = write_spec(
        matrix={"seed": {"range": [1, 8]}},
        defaults={"num_inference_steps": 20},
        execution={"concurrency": 4},
        backend="fal",
    )
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "cost estimate: about $0.20 (8 output megapixels)" in out
    assert "cost basis: $0.025 per output megapixel, each image rounded up" in out
    assert "time estimate on fal: about 5 s at concurrency 4 (assumed 5 s per 1-MP" in out
    assert "URL" not in out  # every input is local: its size is known


def test_a_big_input_is_billed_by_its_rounded_up_megapixels(write_spec, tmp_path, capsys):
    (tmp_path / "images" / "big.png").write_bytes(png_bytes(1280, 1024))  # 1.31 MP -> 2
    spec = write_spec(defaults={"image_url": "images/big.png", "num_images": 2})
    assert main(["plan", str(spec), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["estimated_megapixels"] == 4 and plan["estimated_usd"] == 0.1


def test_url_inputs_are_counted_and_said(write_spec, capsys):
    spec = write_spec(
        matrix={"image_url": ["https://example.com/a.png", "images/a.png"]},
    )
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "1 request has an input given as a URL, whose size is unknown" in out
    assert "counted as 1 MP each" in out
    assert "free offline (backend local); on fal about $0.05" in out
    assert main(["plan", str(spec), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unsized_inputs"] == 1


def test_wall_time_divides_by_the_concurrency_actually_usable():
    plan = Plan(3, (), (), 3, 0.075, work_seconds=30.0)
    assert plan.seconds_at(1) == 30.0
    assert plan.seconds_at(3) == 10.0
    assert plan.seconds_at(64) == 10.0  # never more at once than there are requests
    assert Plan(0, (), (), 0, 0.0, work_seconds=0.0).seconds_at(8) == 0.0
    assert Plan(1, (), (), 1, 0.025).seconds_at(8) is None  # no timing in the endpoint file


def test_explain_without_a_price_says_so():
    assert FLUX is not None
    from dataclasses import replace

    free = replace(FLUX, usd_per_megapixel=None)
    lines = explain_cost(Plan(1, (), (), 1, None), free, "fal", 8)
    assert lines == ["cost estimate: unknown (the endpoint file states no price)"]


def test_a_data_uri_input_is_measured(write_spec, capsys):
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(1500, 1000)).decode()
    spec = write_spec(defaults={"image_url": uri})  # 1.5 MP, billed as 2
    assert main(["plan", str(spec), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["estimated_megapixels"] == 2 and plan["unsized_inputs"] == 0


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (PIL refuses to open a very large one)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_an_input_too_large_to_open_is_a_located_error_not_a_crash(write_spec, tmp_path, capsys):
    # An image over PIL's pixel limit (400 MP here) is refused where it is named, by plan as
    # by validate, before any row is priced: one located line, never PIL's traceback.
    (tmp_path / "images" / "huge.png").write_bytes(_header_only_png(20000, 20000))
    spec = write_spec(matrix={"image_url": ["images/a.png", "images/huge.png"]})
    for command in ("validate", "plan"):
        assert main([command, str(spec)]) == 2
        err = capsys.readouterr().err
        assert "huge.png is too large an image to read (over 178956970 pixels)" in err
        assert "(row 2)" in err and "Traceback" not in err
