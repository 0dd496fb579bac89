"""OUT/stats.json: the run's counters (counts, errors, retries, 429s, spend) as one JSON object,
rewritten during a run and at its end."""

from __future__ import annotations

import json

from runner.emulator import Faults
from runner.folder import statsfile

from .test_executor import run, settings_for


async def test_stats_json_counts_the_run(write_spec, emulator_factory, tmp_path):
    # a short Retry-After: the 429s are counted, not waited out at the default 1 s
    em = await emulator_factory(faults=Faults(p_429=0.3), seed=5, retry_after=0.01)
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
        "awaiting_result": 0,
        "unanswered": 0,
        "outputs_not_fetched": 0,
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
    em = await emulator_factory(latency=0.4)  # 0.1 s a request at 10 steps: 5 rewrites each
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
