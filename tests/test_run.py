"""runner.run, the one entry a script and `runner run` share: a shard's rows, the spending cap's
check before anything is made, and a stop that comes back in the result."""

from __future__ import annotations

import json
import re

import pytest

import runner
from runner import RunOptions, Shard, StopKind

from .conftest import fal_env, last_records


async def test_a_shard_that_selects_nothing_starts_nothing(write_spec, tmp_path):
    spec = write_spec(matrix={"seed": [1, 2, 3]})
    out = tmp_path / "out"
    result = await runner.run(spec, RunOptions(out=out, shard=Shard(1, 100_000)))
    assert not result.ran and (result.rows, result.requests) == (0, 3)
    assert result.stop is None and not out.exists()


async def test_a_shard_runs_its_part_and_says_how_many_rows_it_has(write_spec, tmp_path):
    spec = write_spec(matrix={"seed": list(range(9))})
    checked = runner.check(spec)
    parts = []
    for i in (1, 2, 3):
        out = tmp_path / f"part{i}"
        result = await runner.run(checked, RunOptions(out=out, shard=Shard(i, 3)))
        assert result.ran and result.out == out.resolve() and result.requests == 9
        assert result.stats.ok == result.rows == len(last_records(out))
        parts.append(set(last_records(out)))
    assert sum(len(p) for p in parts) == 9 and len(set().union(*parts)) == 9


async def test_a_capped_run_over_its_cap_is_refused_before_anything_is_made(
    write_spec, emulator_factory, tmp_path
):
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [1, 12]}})  # 12 MP at $0.025
    out = tmp_path / "out"
    with pytest.raises(runner.UsageError, match="exceeds the spending cap \\$0.25"):
        await runner.run(spec, RunOptions(out=out, backend="fal", max_usd=0.25), env=fal_env(em))
    assert not out.exists() and sum(em.stats.requests.values()) == 0
    # the part of the job a shard takes is what counts against the cap
    part = RunOptions(out=out, backend="fal", max_usd=0.25, shard=Shard(1, 2))
    result = await runner.run(spec, part, env=fal_env(em))
    assert result.stop is None and em.stats.submissions == result.rows < 12


async def test_a_refused_key_comes_back_as_the_runs_stop(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory(keys=frozenset({"right"}))
    spec = write_spec(matrix={"seed": [1, 2, 3]})
    out = tmp_path / "out"
    options = RunOptions(out=out, backend="fal")
    result = await runner.run(spec, options, env=fal_env(em, "wrong-key-0451"))
    assert result.stop is not None and result.stop.kind is StopKind.REFUSED_KEY
    assert "refused the API key" in result.stop.reason and "0451" not in result.stop.reason
    assert (result.stats.ok, result.stats.submitted, em.stats.submissions) == (0, 0, 0)
    end = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert end["event"] == "end" and end["stop_reason"] == result.stop.reason
    again = await runner.run(spec, options, env=fal_env(em, "right"))  # the key is fixed
    assert again.stop is None and again.stats.ok == 3


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"backend": "fal "}, "backend must be one of 'local', 'fal', not 'fal '"),
        ({"mode": "Sync"}, "mode must be one of 'queue', 'sync'"),
        ({"concurrency": 0}, "concurrency must be 1 to 1024, not 0"),
        ({"max_usd": -1}, "max_usd must be a number of US dollars more than 0"),
        ({"max_usd": float("nan")}, "max_usd must be a number of US dollars more than 0"),
        ({"shard": "1/2"}, "shard must be a runner.Shard(I, N)"),
    ],
)
def test_a_scripts_options_meet_the_rules_of_the_command_line(options, says):
    # a typo must not quietly run on the emulator, or send with a cap that holds nothing
    with pytest.raises(runner.UsageError, match=re.escape(says)):
        RunOptions(**options)


@pytest.mark.parametrize("part", [(0, 3), (4, 3), (1, 0), (1.0, 2)])
def test_a_shard_outside_its_parts_is_refused(part):
    with pytest.raises(runner.UsageError, match="a shard is I/N"):
        Shard(*part)
