"""`runner run --shard I/N`: disjoint parts chosen by key that together are exactly the whole."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.cli.commands import main
from runner.grid.shards import Shard, parse_shard

from .conftest import last_records

keys = st.lists(st.text("0123456789abcdef", min_size=16, max_size=16), unique=True, max_size=60)


@given(keys, st.integers(1, 7))
def test_the_parts_are_disjoint_and_together_the_whole(found, n):
    parts = [{k for k in found if Shard(i, n).holds(k)} for i in range(1, n + 1)]
    assert sum(len(p) for p in parts) == len(found)
    assert set().union(*parts) == set(found)


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2", "1/2/3"])
def test_bad_shards_are_usage_errors(text, capsys, write_spec):
    with pytest.raises(ValueError, match="I/N with 1 <= I <= N"):
        parse_shard(text)
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(write_spec()), f"--shard={text}"])
    assert exit_.value.code == 2 and "--shard takes I/N" in capsys.readouterr().err


def test_a_part_that_selects_no_request_says_so_and_makes_nothing(write_spec, tmp_path, capsys):
    spec = write_spec(matrix={"seed": [1, 2, 3]})
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--no-progress", "--shard", "1/100000"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "--shard 1/100000 selects none of the 3 requests; nothing to run\n"
    assert captured.err == "" and not out.exists()


def test_sampling_sees_the_whole_grid_before_sharding(write_spec, tmp_path):
    spec = write_spec(matrix={"seed": list(range(30))}, sample={"n": 12, "seed": 3})
    whole = tmp_path / "whole"
    assert main(["run", str(spec), "--out", str(whole), "--no-progress"]) == 0
    parts = []
    for i in (1, 2, 3):
        out = tmp_path / f"part{i}"
        assert (
            main(["run", str(spec), "--out", str(out), "--no-progress", "--shard", f"{i}/3"]) == 0
        )
        parts.append(set(last_records(out)))
        runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
        assert runs[0]["shard"] == f"{i}/3"
    assert sum(len(p) for p in parts) == 12 and set().union(*parts) == set(last_records(whole))


def test_a_shard_summary_says_how_many_requests_its_part_has(write_spec, tmp_path, capsys):
    spec = write_spec(matrix={"seed": list(range(9))})
    sizes = []
    for i in (1, 2, 3):
        out = tmp_path / f"part{i}"
        assert (
            main(["run", str(spec), "--out", str(out), "--no-progress", "--shard", f"{i}/3"]) == 0
        )
        line = capsys.readouterr().out.strip().splitlines()[-1]
        n = len(last_records(out))
        sizes.append(n)
        assert line.startswith(f"{n} requests: {n} ok, 0 failed;"), line  # had no head
    assert sum(sizes) == 9
