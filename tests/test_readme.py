"""The README's own claims, run as it tells a user to: its length and order, the quick start's
paths, the output layout (drawn in docs/results.md), the results section's export and loading
from the repository root, and the walkthrough end to end (offline, then against a
fal-compatible server), with the commands and snippets read from the docs."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

from PIL import Image

from runner.cli.commands import main

from .conftest import last_records

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")


def section(title: str, text: str = README) -> str:
    """The text from the `## title` heading to the next `## ` heading (of the README)."""
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def blocks(text: str, lang: str) -> list[str]:
    """The fenced code blocks of `text` whose info string is `lang` ("" for a bare fence)."""
    found, info, lines = [], None, []
    for line in text.splitlines():
        if info is None and line.startswith("```"):
            info, lines = line[3:].strip(), []
        elif info is not None and line.strip() == "```":
            if info == lang:
                found.append("\n".join(lines) + "\n")
            info = None
        elif info is not None:
            lines.append(line)
    return found


def commands(text: str) -> list[list[str]]:
    """`runner ...` lines of the section's sh blocks, as argument lists (comments dropped)."""
    found = []
    for block in blocks(text, "sh"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["runner"]:
                found.append(words[1:])
    return found


def copy_specs(tmp_path: Path) -> Path:
    """A copy of the repository's specs/ (without old runs) under tmp_path/repo."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "specs", repo / "specs", ignore=shutil.ignore_patterns("runs"))
    return repo


def layout_patterns() -> dict[str, re.Pattern[str]]:
    """The Output section's folder layout as regexes over paths relative to the run folder."""
    drawn = section("The run folder", RESULTS)
    (layout,) = [b for b in blocks(drawn, "") if "<output>/manifest.jsonl" in b]
    patterns = {}
    for line in layout.splitlines():
        path = line.split()[0].removeprefix("<output>/")
        regex = re.escape(path)
        for name, part in (("key", "[0-9a-f]{16}"), ("n", r"\d+"), ("ext", r"\w+")):
            regex = regex.replace(re.escape(f"<{name}>"), part)
        regex = re.sub(r"\\<[^>]*\\>|<[^>]*>", "[^/]+", regex).replace(re.escape("…"), ".+")
        patterns[path] = re.compile(regex)
    return patterns


def test_quick_start_results_land_where_the_readme_says(tmp_path, monkeypatch, capsys):
    quick = section("Quick start")
    assert "pip install . && runner run specs/quickstart.yaml" in quick
    assert "specs/runs/quickstart/images/" in quick
    assert "specs/runs/quickstart/manifest.jsonl" in quick
    repo = copy_specs(tmp_path)
    monkeypatch.chdir(repo)
    assert main(["run", "specs/quickstart.yaml", "--no-progress"]) == 0
    assert any((repo / "specs/runs/quickstart/images").iterdir())
    assert last_records(repo / "specs/runs/quickstart")
    assert "`runner report specs/runs/quickstart`" in quick
    assert main(["report", "specs/runs/quickstart"]) == 0
    assert (repo / "specs/runs/quickstart/report.html").is_file()


def test_output_layout_is_as_drawn(tmp_path, monkeypatch, capsys):
    patterns = layout_patterns()
    assert {"manifest.jsonl", "runs.jsonl", "report.html"} <= patterns.keys()
    repo = copy_specs(tmp_path)
    monkeypatch.chdir(repo)
    assert main(["run", "specs/sweep.yaml", "--no-progress"]) == 0
    assert main(["report", "specs/runs/sweep"]) == 0
    out = repo / "specs/runs/sweep"
    files = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    for name in ("manifest.jsonl", "runs.jsonl", "report.html"):
        assert name in files
    for path in files:  # every file the run wrote is one the layout shows
        assert any(p.fullmatch(path) for p in patterns.values()), path
    for key, record in last_records(out).items():
        for output in record["outputs"]:
            assert any(p.fullmatch(output["file"]) for p in patterns.values())
            assert key in output["file"]  # named from the key only


def test_the_results_section_exports_and_loads_from_the_repository_root(
    tmp_path, monkeypatch, capsys
):
    results = section("Results and datasets")
    exports = commands(results)
    assert [e[0] for e in exports] == ["export", "export"]
    assert {e[e.index("--format") + 1] for e in exports} == {"parquet", "imagefolder"}
    (snippet,) = blocks(results, "python")
    assert "load_dataset" in snippet
    repo = copy_specs(tmp_path)
    monkeypatch.chdir(repo)
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "hf-cache")
    assert main(["run", "specs/sweep.yaml", "--no-progress"]) == 0
    for export in exports:
        assert main(export) == 0, export
    capsys.readouterr()
    exec(snippet, {})
    assert capsys.readouterr().out.startswith("12 (96, 64) ")  # every row, its output image


def test_the_readme_is_read_in_one_sitting_in_the_issue_s_order():
    assert len(README.splitlines()) <= 250
    titles = [line[3:] for line in README.splitlines() if line.startswith("## ")]
    order = ["Install", "Quick start", "Walkthrough", "Writing a spec", "Running on fal for real"]
    order += ["Results and datasets", "When something fails"]
    assert len(titles) == len(order), titles
    assert all(title.startswith(o) for title, o in zip(titles, order, strict=True)), titles
    top = README[: README.index("\n## ")]
    assert "](docs/report.png)" in top and "](docs/troubleshooting.md)" in top


def _photo(path: Path, color: tuple[int, int, int]) -> None:
    # about one megapixel (1000 x 900 = 0.9 MP, billed as 1), as the README's plan output says
    Image.new("RGB", (1000, 900), color).save(path, quality=85)


def test_the_walkthrough_end_to_end(tmp_path, monkeypatch, fal_server, capsys):
    walk = section("Walkthrough")
    (spec_text,) = blocks(walk, "yaml")
    home = tmp_path / "home"
    job = home / "restyle"
    (job / "photos").mkdir(parents=True)
    _photo(job / "photos" / "beach.jpg", (230, 190, 120))
    _photo(job / "photos" / "forest.jpg", (30, 110, 40))
    (job / "photos" / "notes.txt").write_text("not an image: the glob skips it")
    (job / "restyle.runner.yaml").write_text(spec_text)
    monkeypatch.setenv("HOME", str(home))
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(job)  # `cd ~/restyle`

    steps = commands(walk)
    assert [s[0] for s in steps] == ["validate", "plan", "run", "run"]
    validate, plan, offline, on_fal = steps
    assert main(validate) == 0
    assert "ok, 4 requests" in capsys.readouterr().out
    assert main(plan) == 0
    shown = capsys.readouterr().out.splitlines()
    (expected,) = [b for b in blocks(walk, "") if "cost estimate" in b]
    for line in expected.strip().splitlines():  # the lines the README shows, exactly
        assert line in shown
    assert main(offline) == 0
    assert len(last_records(job / "runs/restyle")) == 4

    server = fal_server("walk-key", keys=frozenset({"walk-key"}))
    assert on_fal[on_fal.index("--out") + 1] == "runs/restyle-fal"
    assert on_fal[on_fal.index("--backend") + 1] == "fal"
    cap = on_fal.index("--max-usd") + 1
    assert float(on_fal[cap]) >= 0.10  # the README's cap lets its own $0.10 estimate through
    too_low = [*on_fal[:cap], "0.05", *on_fal[cap + 1 :], "--no-progress"]
    assert main(too_low) == 2 and server.stats.submissions == 0
    assert main([*on_fal, "--no-progress"]) == 0
    fal = last_records(job / "runs/restyle-fal")
    assert len(fal) == 4 and {r["backend"] for r in fal.values()} == {"fal"}
    assert server.stats.submissions == 4

    assert "`runner report runs/restyle`" in walk
    assert main(["report", "runs/restyle"]) == 0
    assert (job / "runs/restyle/report.html").is_file()
    for where in ("runs/restyle/manifest.jsonl", "runs/restyle/images/", "runs/restyle/runs.jsonl"):
        assert where in walk and (job / where).exists()

    (load,) = blocks(walk, "python")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # "from any working folder"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(load, {})
    lines = printed.getvalue().splitlines()
    assert len(lines) == 4
    for line in lines:
        source, *_, image = line.split(" ")
        assert Path(source).parent == job / "photos" and Path(image).is_file()


def test_the_exit_codes_the_readme_lists(write_spec, tmp_path, fal_server):
    stated = dict(re.findall(r"\*\*(\d)\*\* ([^;*]+)", section("When something fails")))
    assert set(stated) == {"0", "1", "2", "3"}
    assert "ok" in stated["0"] and "failed" in stated["1"]
    assert "nothing sent" in stated["2"] and "stopped early" in stated["3"]
    ok = write_spec("ok.yaml")
    assert main(["run", str(ok), "--out", str(tmp_path / "0"), "--no-progress"]) == 0
    remote = write_spec("remote.yaml", defaults={"image_url": "https://example.com/a.png"})
    assert main(["run", str(remote), "--out", str(tmp_path / "1"), "--no-progress"]) == 1
    bad = write_spec("bad.yaml", defaults={"strength": 7})
    assert main(["run", str(bad), "--out", str(tmp_path / "2"), "--no-progress"]) == 2
    assert not (tmp_path / "2").exists()  # nothing sent, nothing written
    fal_server("wrong", keys=frozenset({"right"}))  # a key the server refuses
    argv = ["run", str(ok), "--backend", "fal", "--out", str(tmp_path / "3"), "--no-progress"]
    assert main(argv) == 3
