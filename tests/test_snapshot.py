"""What was validated is what is sent: source files and local images edited during a run stop
new submissions (exit 3, one line naming the file), and a run never sends more than it
validated."""

from __future__ import annotations

import os
import time

import runner
from runner import RunOptions
from runner.errors import GridError
from runner.execution.inputguard import InputGuard
from runner.execution.stops import StopKind
from runner.grid.expand import expand
from runner.grid.snapshot import InputSnapshot
from runner.spec.check import check
from runner.spec.load import load_spec

from .conftest import fal_env, png_bytes
from .test_crash import start_run, wait_for
from .test_executor import run, settings_for


def _prompts(path, n: int, text: str = "a red square number") -> None:
    path.write_text("".join(f"{text} {i}\n" for i in range(n)))


def test_a_prompts_file_edited_mid_run_stops_the_run(write_spec, tmp_path, threaded_emulator):
    server = threaded_emulator(latency=2.0)  # 0.5 s a request at 10 steps
    _prompts(tmp_path / "prompts.txt", 6)
    spec = write_spec(
        matrix={"seed": [1, 2], "prompt": {"lines": "prompts.txt"}},
        backend="fal",
        limits={"max_requests": 12},
        execution={"concurrency": 2},
    )
    proc = start_run(spec, tmp_path / "out", server.env())
    wait_for(lambda: server.stats.submissions >= 2)
    _prompts(tmp_path / "prompts.txt", 20, "a blue circle")  # rewritten in place
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert err.count("\n") == 1 and "prompts.txt changed during the run" in err
    assert server.stats.submissions <= 2 + 2  # what went before the edit, and in flight


def test_an_edit_that_breaks_a_template_mid_run_is_a_stop_not_a_spec_error(
    write_spec, tmp_path, threaded_emulator
):
    server = threaded_emulator(latency=2.0)
    _prompts(tmp_path / "prompts.txt", 6)
    spec = write_spec(
        matrix={"seed": [1, 2, 3], "prompt": {"lines": "prompts.txt"}},
        backend="fal",
        execution={"concurrency": 2},
    )
    proc = start_run(spec, tmp_path / "out", server.env())
    wait_for(lambda: server.stats.submissions >= 2)
    _prompts(tmp_path / "prompts.txt", 6, "a {nothing} here")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "prompts.txt" in err and err.count("\n") == 1


async def test_a_grid_error_mid_run_stops_new_submissions(write_spec, emulator_factory, tmp_path):
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": {"range": [0, 4]}})
    settings, requests = settings_for(spec, tmp_path / "out", concurrency=1)

    def breaking():
        yield from requests[:2]
        raise GridError("undefined template variable 'nothing'")

    stats = await run(settings, breaking(), em)
    assert stats.ok == 2 and em.stats.submissions == 2
    assert stats.stop_reason is not None and "nothing" in stats.stop_reason


async def test_a_local_image_changed_after_validation_is_never_sent(
    write_spec, emulator_factory, tmp_path
):
    em = await emulator_factory()
    spec = write_spec(matrix={"seed": [1, 2]})
    settings, requests = settings_for(spec, tmp_path / "out")
    (tmp_path / "images" / "a.png").write_bytes(png_bytes(color=(0, 0, 255)))
    stats = await run(settings, requests, em)
    assert em.stats.submissions == 0
    assert stats.stop_reason is not None and "a.png changed" in stats.stop_reason


async def test_an_image_of_a_glob_changed_mid_run_is_named(write_spec, emulator_factory, tmp_path):
    # the run replays validation's keys, as `runner run` does: an image's new bytes make a
    # request the grid did not validate, and the stop names the image, not a request key
    em = await emulator_factory()
    (tmp_path / "images" / "b.png").write_bytes(png_bytes(color=(0, 255, 0)))
    spec = write_spec(matrix={"image_url": {"files": "images/*.png"}})
    out = tmp_path / "out"
    checked = check(spec, out=out)
    time.sleep(0.01)  # a later write has a later mtime than validation's start
    (tmp_path / "images" / "b.png").write_bytes(png_bytes(color=(0, 0, 255)))
    options = RunOptions(backend="fal", concurrency=1)
    stats = (await runner.run(checked, options, env=fal_env(em))).stats
    assert stats.ok == 1 and em.stats.submissions == 1  # a.png went; b.png's row did not
    said = stats.stop_reason or ""
    assert "images/b.png changed during the run" in said and "no longer in the grid" not in said


def test_snapshot_sees_edits_new_glob_matches_and_ignores_a_touch(write_spec, tmp_path):
    (tmp_path / "rows.csv").write_text("prompt\nx\n")
    spec = load_spec(
        write_spec(matrix={"row": {"csv": "rows.csv"}, "image_url": {"files": "images/*.png"}})
    )
    snap = InputSnapshot.take(spec)
    assert snap.changed(globs=True) is None
    later = time.time() + 5
    os.utime(tmp_path / "rows.csv", (later, later))  # touched, same bytes
    assert snap.changed() is None
    (tmp_path / "images" / "b.png").write_bytes(png_bytes())
    assert snap.changed() is None  # globs are listed again only when asked
    assert "images/b.png" in (snap.changed(globs=True) or "")
    (tmp_path / "rows.csv").write_text("prompt\ny\n")
    assert "rows.csv changed" in (snap.changed() or "")


def test_a_fixed_image_whose_row_no_longer_makes_its_key_is_named(write_spec, tmp_path):
    # the row built again reads the image's new bytes (a new request): the stop names the
    # image that `defaults` names, not only the key validation saw
    spec = write_spec(matrix={"seed": [1, 2]})
    checked = check(spec)
    validated = next(expand(checked.spec, checked.endpoint))
    time.sleep(0.01)  # a later write has a later mtime than validation's start
    (tmp_path / "images" / "a.png").write_bytes(png_bytes(color=(0, 0, 255)))
    rebuilt = next(expand(checked.spec, checked.endpoint))
    assert rebuilt.key != validated.key
    stop = InputGuard(checked.inputs).row_changed(validated.key, rebuilt)
    assert stop is not None and stop.kind is StopKind.INPUT_CHANGED
    assert "images/a.png changed during the run" in stop.reason
    assert "no longer in the grid" not in stop.reason
