"""Spending: fal's megapixel rounding, the cap that refuses a run before anything is sent, and
OUT/stats.json (counts, errors, retries, 429s, spend) rewritten during a run and at its end."""

from __future__ import annotations

import json

import pytest

from runner import statsfile
from runner.cli import main
from runner.emulator import Faults
from runner.spending import billed_megapixels

from .conftest import png_bytes
from .test_executor import run, settings_for


@pytest.mark.parametrize(
    ("size", "mp"),
    [((1, 1), 1), ((1024, 768), 1), ((1024, 1024), 1), ((1025, 1024), 2), ((1280, 1024), 2)],
)
def test_fal_bills_whole_megapixels_of_1024x1024(size, mp):
    assert billed_megapixels(*size) == mp


def test_plan_bills_a_1024_square_input_as_one_megapixel(write_spec, tmp_path, capsys):
    (tmp_path / "images" / "sq.png").write_bytes(png_bytes(1024, 1024))
    spec = write_spec(defaults={"image_url": "images/sq.png"}, matrix={"seed": [1, 2]})
    assert main(["plan", str(spec), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["estimated_megapixels"] == 2 and plan["estimated_usd"] == 0.05


def fal_run(spec, out, *extra):
    """`runner run --backend fal`, against the server the `fal_server` fixture started."""
    return main(["run", str(spec), "--out", str(out), "--no-progress", "--backend", "fal", *extra])


def test_a_run_over_its_cap_is_refused_with_nothing_sent(write_spec, tmp_path, fal_server, capsys):
    server = fal_server()
    # 12 rows of a 48x32 input: 12 MP at $0.025 = $0.30
    spec = write_spec(matrix={"seed": {"range": [1, 12]}}, limits={"max_usd": 0.25})
    out = tmp_path / "out"
    assert fal_run(spec, out) == 2
    err = capsys.readouterr().err
    assert "estimated cost $0.30 of the rows still to send (12 output megapixels)" in err
    assert "exceeds the spending cap $0.25" in err and "nothing was sent" in err
    assert sum(server.stats.requests.values()) == 0 and not out.exists()
    # --max-usd overrides the spec, both ways
    assert fal_run(spec, out, "--max-usd", "0.1") == 2
    assert sum(server.stats.requests.values()) == 0
    assert fal_run(spec, out, "--max-usd", "0.30") == 0
    assert server.stats.submissions == 12
    assert "about $0.30 spent (12 MP)" in capsys.readouterr().out


def test_the_cap_counts_only_this_shard_and_not_a_local_run(
    write_spec, tmp_path, fal_server, capsys
):
    server = fal_server()
    spec = write_spec(matrix={"seed": {"range": [1, 12]}}, limits={"max_usd": 0.25})
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0  # local: free
    assert "spent" not in capsys.readouterr().out
    assert fal_run(spec, tmp_path / "part", "--shard", "1/3") == 0
    assert 0 < server.stats.submissions < 10


def test_a_cap_must_be_positive(write_spec, capsys):
    spec = write_spec(limits={"max_usd": 0})
    assert main(["validate", str(spec)]) == 2
    assert "max_usd" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(spec), "--max-usd", "0"])
    assert exit_info.value.code == 2


async def test_stats_json_counts_the_run(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory(faults=Faults(p_429=0.3), seed=5)
    spec = write_spec(matrix={"seed": {"range": [0, 9]}, "num_inference_steps": [10]})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=3)
    bad = requests[0].__class__(
        "badbadbadbadbad0", {**requests[0].input, "strength": 7}, {"seed": -1}
    )
    stats = await run(settings, [*requests, bad], em)
    document = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert document["finished"] is True and document["interrupted"] is False
    assert document["counts"] == {
        "ok": 10,
        "failed": 1,
        "already_ok": 0,
        "failed_before": 0,
        "in_flight": 0,
    }
    assert document["errors"] == {"validation": 1}
    assert document["http_429"] == em.stats.faults_of("429") > 0
    assert document["retries"] == stats.retrying > 0
    assert document["megapixels"] == 10 and document["estimated_usd"] == 0.25
    assert document["usd_per_megapixel"] == 0.025 and document["submitted"] == stats.submitted
    assert document["elapsed_s"] > 0 and document["requests_per_s"] > 0
    assert document["backend"] == "fal" and document["run_id"]
    assert not list((tmp_path / "out").glob("*.tmp"))


async def test_stats_json_is_rewritten_while_the_run_goes(
    write_spec, emulator_factory, tmp_path, monkeypatch
):
    monkeypatch.setattr(statsfile, "INTERVAL", 0.02)
    em = await emulator_factory(latency=1.2)  # 0.3 s a request at 10 steps
    spec = write_spec(matrix={"seed": {"range": [0, 3]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=1)
    seen = []

    def on_event(event, stats):
        path = tmp_path / "out" / "stats.json"
        if event == "ok" and path.exists():
            seen.append(json.loads(path.read_text()))

    await run(settings, requests, em, on_event=on_event)
    assert seen and all(not s["finished"] for s in seen)
    assert seen[-1]["counts"]["ok"] >= 2  # snapshots follow the run


def test_the_cap_is_on_what_is_still_to_run(write_spec, tmp_path, fal_server, capsys):
    server = fal_server()
    out = tmp_path / "out"
    spec = write_spec(matrix={"seed": {"range": [1, 12]}})  # $0.30
    assert fal_run(spec, out, "--max-usd", "0.30") == 0
    # the job grows by 4 rows ($0.10 more, $0.40 in all): a $0.25 cap lets the rest run
    spec = write_spec(matrix={"seed": {"range": [1, 16]}})
    assert fal_run(spec, out, "--max-usd", "0.25") == 0
    assert server.stats.submissions == 16
    # a finished job resumes under any cap, sending nothing
    assert fal_run(spec, out, "--max-usd", "0.01") == 0
    assert server.stats.submissions == 16
    # a cap below what is still to run is still refused
    spec = write_spec(matrix={"seed": {"range": [1, 24]}})  # 8 new rows: $0.20
    assert fal_run(spec, out, "--max-usd", "0.15") == 2
    assert "estimated cost $0.20 of the rows still to run" in capsys.readouterr().err
    assert server.stats.submissions == 16
