"""The output check of ok journal lines, in this process and by its helper process: the same
verdicts, a later line replacing an earlier one's, and a dead helper never trusted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.folder import outputcheck
from runner.folder.journal import Journal, read_state
from runner.folder.names import MANIFEST
from runner.folder.outputcheck import HelperFailed, OutputCheck


def dumps(record: object) -> str:
    return json.dumps(record, separators=(",", ":"))  # as the journal writes lines


def ok_line(key: str, *files: tuple[str, int | None]) -> str:
    outputs = [{"file": f, "sha256": "0" * 64, **({"bytes": n} if n is not None else {})}
               for f, n in files]  # fmt: skip
    head = {"key": key, "status": "ok", "backend": "local", "attempts": 1}
    return dumps({**head, "possible_duplicates": 0, "outputs": outputs}) + "\n"


def line(key: str, status: str) -> str:
    return dumps({"key": key, "status": status, "attempts": 1}) + "\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A journal whose verdicts exercise every rule (the expected damaged keys: see below)."""
    images = tmp_path / "images" / "ab"
    images.mkdir(parents=True)
    for name, size in (("a.png", 5), ("b.png", 7), ("c.png", 3)):
        (images / name).write_bytes(b"x" * size)
    lines = [
        ok_line("k000000000000001", ("images/ab/a.png", 5)),  # intact
        ok_line("k000000000000002", ("images/ab/a.png", 5), ("images/ab/gone.png", 1)),
        ok_line("k000000000000003", ("images/ab/b.png", 6)),  # resized
        ok_line("k000000000000004", ("images/ab/gone.png", 2)),  # missing, then fixed:
        ok_line("k000000000000004", ("images/ab/c.png", 3)),
        ok_line("k000000000000005", ("images/ab/c.png", 3)),  # intact, then a later ok
        ok_line("k000000000000005", ("images/ab/c.png", 9)),  # line with another size
        ok_line("k000000000000006", ("images/ab/gone.png", 4)),  # missing, but failed since
        line("k000000000000006", "failed"),
        ok_line("k000000000000007", ("images/ab/b.png", None)),  # no size recorded: exists
        ok_line("k000000000000008"),  # no output at all
        ok_line("k000000000000009", ("images/ab/gone.png", None)),
        # the older layout (input first), parsed as JSON
        dumps(
            {
                "key": "k00000000000000a",
                "input": {"seed": 1},
                "status": "ok",
                "outputs": [{"file": "images/ab/gone.png", "bytes": 1}],
            }
        )
        + "\n",  # fmt: skip
    ]
    (tmp_path / MANIFEST).write_text("".join(lines))
    return tmp_path


EXPECTED = {
    "k000000000000002",
    "k000000000000003",
    "k000000000000005",
    "k000000000000009",
    "k00000000000000a",
}


@pytest.mark.parametrize("helper", [False, True])
def test_both_ways_give_the_same_verdicts(folder: Path, helper: bool) -> None:
    check = OutputCheck(folder, helper)
    assert (check._helper is not None) == helper
    state = read_state(folder, check)
    found = {k.decode() for k in check.damaged() if state[k].status == "ok"}
    assert found == EXPECTED


def test_the_journal_uses_a_helper_for_a_large_journal(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = []
    real = outputcheck._start

    def start(folder_bytes: bytes) -> subprocess.Popen[bytes] | None:
        started.append(1)
        return real(folder_bytes)

    monkeypatch.setattr(outputcheck, "_start", start)
    journal = Journal(folder, check_outputs=True)
    journal.close()
    assert journal.damaged == EXPECTED and not started  # a small journal: checked here
    monkeypatch.setattr("runner.folder.journal.HELPER_FROM", 0)
    journal = Journal(folder, check_outputs=True)
    journal.close()
    assert journal.damaged == EXPECTED and started == [1]


def dying_helper(folder_bytes: bytes) -> subprocess.Popen[bytes]:
    """A helper that reads a little and dies: its verdict must not count."""
    code = "import os, sys; os.read(0, 10); sys.exit(3)"
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


def test_a_helper_that_dies_is_not_trusted_and_the_check_is_done_here(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outputcheck, "_start", dying_helper)
    check = OutputCheck(folder, helper=True)
    read_state(folder, check)
    with pytest.raises(HelperFailed):
        check.damaged()
    monkeypatch.setattr("runner.folder.journal.HELPER_FROM", 0)
    journal = Journal(folder, check_outputs=True)
    journal.close()
    assert journal.damaged == EXPECTED


def test_no_interpreter_to_start_means_the_check_is_done_here(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(folder / "no-such-python"))
    check = OutputCheck(folder, helper=True)
    assert check._helper is None
    read_state(folder, check)
    assert {k.decode() for k in check.damaged()} >= EXPECTED


def test_a_folder_name_with_a_newline_is_checked_here(tmp_path: Path) -> None:
    odd = tmp_path / "a\nb"
    odd.mkdir()
    check = OutputCheck(odd, helper=True)
    assert check._helper is None  # the helper reads the folder as one line


@pytest.mark.parametrize("helper", [False, True])
def test_an_ok_line_in_another_json_spelling_is_checked_too(tmp_path: Path, helper: bool) -> None:
    """A journal line is JSON (README: "the rule for reading it"): one rewritten by another
    tool (spaces, keys in another order) names its outputs all the same, so its missing file
    is found and the row is not taken as done."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "here.png").write_bytes(b"x" * 5)
    outputs = [{"file": "images/gone.png", "sha256": "0" * 64, "bytes": 2}]
    record = {"key": "k000000000000001", "status": "ok", "backend": "local", "attempts": 1}
    intact = {**record, "key": "k000000000000002"}
    lines = [
        json.dumps({**record, "outputs": outputs}),  # json.dumps's own spacing
        json.dumps({**intact, "outputs": [{"file": "images/here.png", "bytes": 5}]}),
        dumps({**record, "key": "k000000000000003", "outputs": outputs}).replace(
            '{"file":"images/gone.png","sha256":"' + "0" * 64 + '",',
            '{"sha256":"' + "0" * 64 + '","file":"images/gone.png",',  # file not first
        ),
    ]
    (tmp_path / MANIFEST).write_text("".join(line + "\n" for line in lines))
    check = OutputCheck(tmp_path, helper)
    read_state(tmp_path, check)
    assert {k.decode() for k in check.damaged()} == {"k000000000000001", "k000000000000003"}
