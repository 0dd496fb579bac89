"""`runner init [DIR]`: a commented starter spec and its sample picture that validate, plan,
run offline and report at once, wherever they are written; never an overwrite, and all or
nothing."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from runner.cli.commands import main
from runner.endpoints import job_schema
from runner.starter import sample_image

from .conftest import last_records
from .starter_image import draw
from .test_readme import commands, section

REFUSED = "nothing was written. HINT: runner init DIR writes into another folder"


def _next_commands(out: str) -> list[list[str]]:
    """The commands `runner init` says to run next, as argument lists."""
    lines = out.splitlines()
    return [shlex.split(x)[1:] for x in lines[lines.index("next:") + 1 :]]


def test_init_writes_a_starter_that_validates_plans_runs_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote runner.yaml: ")
    assert "wrote images/sample.png: " in out
    steps = _next_commands(out)
    assert steps == [
        ["validate", "runner.yaml"],
        ["run", "runner.yaml"],
        ["report", "runs/starter"],
    ]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "images",
        "images/sample.png",
        "runner.yaml",
    ]
    assert (tmp_path / "images" / "sample.png").read_bytes() == sample_image()

    assert main(steps[0]) == 0
    assert capsys.readouterr().out.strip() == "runner.yaml: ok, 4 requests"
    assert main(["plan", "runner.yaml"]) == 0
    assert "4 requests to fal-ai/flux-1/dev/image-to-image (backend local)" in (
        capsys.readouterr().out
    )
    assert main([*steps[1], "--no-progress"]) == 0
    records = last_records(tmp_path / "runs" / "starter")
    assert len(records) == 4 and {r["status"] for r in records.values()} == {"ok"}
    assert {(r["vars"]["style"], r["vars"]["strength"]) for r in records.values()} == {
        (style, strength)
        for style in ("watercolor painting", "pencil sketch")
        for strength in (0.6, 0.9)
    }
    capsys.readouterr()
    assert main(steps[2]) == 0
    assert "4 ok, 0 failed, 0 pending (laid out by style × strength)" in capsys.readouterr().out
    assert (tmp_path / "runs" / "starter" / "report.html").is_file()


def test_init_dir_writes_there_and_its_commands_work_from_here(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "my jobs/first"]) == 0  # made if missing, spaces and all
    steps = _next_commands(capsys.readouterr().out)
    assert steps[0] == ["validate", "my jobs/first/runner.yaml"]
    assert (tmp_path / "my jobs" / "first" / "images" / "sample.png").is_file()
    assert main([*steps[1], "--no-progress"]) == 0
    assert main(steps[2]) == 0
    assert (tmp_path / "my jobs" / "first" / "runs" / "starter" / "report.html").is_file()


def test_the_next_commands_of_a_folder_named_like_an_option_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--", "-job"]) == 0
    steps = _next_commands(capsys.readouterr().out)
    assert steps[0] == ["validate", "./-job/runner.yaml"]
    assert main(steps[0]) == 0


def test_the_spec_s_schema_comment_names_the_installed_schema(tmp_path, capsys):
    assert main(["init", str(tmp_path)]) == 0
    first = (tmp_path / "runner.yaml").read_text(encoding="utf-8").splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(.+)", first)
    assert match, first
    schema = Path(match.group(1))
    assert schema.is_absolute() and schema.is_file()  # from any folder the spec is in
    capsys.readouterr()
    assert main(["schema"]) == 0
    assert capsys.readouterr().out.strip() == str(schema) == str(job_schema())


@pytest.mark.parametrize("existing", ["runner.yaml", "images/sample.png"])
def test_init_never_overwrites_and_then_writes_nothing_at_all(
    tmp_path, monkeypatch, capsys, existing
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / existing).parent.mkdir(exist_ok=True)
    (tmp_path / existing).write_text("mine")
    assert main(["init"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"runner: {existing} exists; {REFUSED}\n"
    assert (tmp_path / existing).read_text() == "mine"
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == [
        existing
    ]


def test_init_names_every_file_in_the_way_and_a_dangling_link_counts(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "sample.png").write_bytes(b"mine")
    os.symlink(tmp_path / "elsewhere.yaml", tmp_path / "runner.yaml")  # a link to nothing
    assert main(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"runner: {tmp_path}/runner.yaml and {tmp_path}/images/sample.png exist; {REFUSED}\n"
    )
    assert not (tmp_path / "elsewhere.yaml").exists()  # the link was not followed


def test_a_file_named_as_the_folder_is_refused(tmp_path, capsys):
    (tmp_path / "job").write_text("a file")
    assert main(["init", str(tmp_path / "job")]) == 2
    assert capsys.readouterr().err == f"runner: {tmp_path}/job is not a folder; {REFUSED}\n"
    assert (tmp_path / "job").read_text() == "a file"


def test_a_file_named_images_is_refused_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "images").write_text("a file")
    assert main(["init", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"runner: {tmp_path}/images is not a folder; {REFUSED}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["images"]


def test_a_file_that_appears_during_init_is_kept_and_init_undoes_its_own(
    tmp_path, monkeypatch, capsys
):
    # a second `runner init` in another terminal writes runner.yaml between the check and
    # the write: that file is kept, and this init removes what it had written (the picture,
    # and the folders it made)
    from runner import starter

    real_create = starter._create

    def other_terminal_first(path: Path, data: bytes, made: list[Path]) -> None:
        if path.name == "runner.yaml":
            path.write_text("the other init's")
        real_create(path, data, made)

    monkeypatch.setattr(starter, "_create", other_terminal_first)
    target = tmp_path / "new" / "job"
    assert main(["init", str(target)]) == 2
    assert capsys.readouterr().err == f"runner: {target}/runner.yaml exists; {REFUSED}\n"
    assert (target / "runner.yaml").read_text() == "the other init's"
    assert sorted(p.name for p in target.iterdir()) == ["runner.yaml"]  # no images/ left


def test_a_write_that_fails_half_way_is_one_line_and_leaves_nothing(tmp_path):
    # a file size limit (as a full disk would) stops the picture's write part way: the half
    # file, and the folders init made, are removed
    limited = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))\n"
        "from runner.cli import main\n"
        "sys.exit(main(['init', sys.argv[1]]))\n"
    )
    job = tmp_path / "job"
    done = subprocess.run(
        [sys.executable, "-c", limited, str(job)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"runner: cannot write {job}/images/sample.png: File too large; {REFUSED}\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_with_nothing_written(tmp_path, capsys):
    tmp_path.chmod(0o555)
    try:
        assert main(["init", str(tmp_path)]) == 2
        assert "Permission denied; nothing was written" in capsys.readouterr().err
        assert list(tmp_path.iterdir()) == []
    finally:
        tmp_path.chmod(0o755)


def test_an_empty_dir_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["init", ""])
    assert stop.value.code == 2
    assert "must name a folder" in capsys.readouterr().err


def test_the_readme_install_steps_work_as_written(tmp_path, monkeypatch, capsys):
    steps = commands(section("Install"))
    assert [s[0] for s in steps] == ["init", "run", "report"]
    assert "pipx install fal-batch-runner" in section("Install")
    monkeypatch.chdir(tmp_path)  # "in an empty folder"
    for step in steps:
        argv = [*step, "--no-progress"] if step[0] == "run" else step
        assert main(argv) == 0, step
    assert (tmp_path / "runs" / "starter" / "report.html").is_file()


def test_the_shipped_sample_is_the_drawn_picture():
    shipped = Image.open(Path(__file__).parent.parent / "runner" / "starter" / "sample.png")
    assert shipped.format == "PNG" and shipped.size == (512, 384) and shipped.mode == "RGB"
    # `python -m tests.starter_image` made it; a Pillow release may draw an edge differently
    difference = ImageStat.Stat(ImageChops.difference(shipped, draw())).mean
    assert max(difference) < 1.0
