"""Every option of every command is documented, and every documented option exists. The options
are read from `python -m runner [COMMAND] --help`, as a user sees them; the docs are README.md
and docs/*.md. A documented option is any `--name` in them; one written after `runner COMMAND`
(in a code span or a shell block line) must be an option of that command."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")


@functools.cache
def help_text(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "runner", *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return done.stdout


def options(*command: str) -> set[str]:
    """The options a --help lists (its option lines, not its examples), without --help."""
    listed = re.findall(r"^\s+(?:-\w[^,\n]*, )?(--[a-z][\w-]*)", help_text(*command), re.M)
    return set(listed) - {"--help"}


def commands() -> list[str]:
    text = help_text()
    listing = text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return re.findall(r"^ {4}(\w+)  ", listing, re.M)


def docs_text() -> str:
    return "\n".join(doc.read_text(encoding="utf-8") for doc in DOCS)


def command_uses(text: str) -> list[tuple[str, str]]:
    """(command, the rest) of each `runner COMMAND …` in a code span or a shell block line."""
    spans = re.findall(r"(?<!`)`(?!`)([^`\n]+)`", text) + re.findall(r"``([^\n]+?)``", text)
    lines = [
        line.split(" #", 1)[0]
        for block in re.findall(r"```sh\n(.*?)```", text, re.S)
        for line in block.splitlines()
    ]
    found = []
    for piece in spans + lines:
        for match in re.finditer(r"\brunner (\w+)((?:(?!\brunner \w).)*)", piece):
            found.append((match.group(1), match.group(2).rstrip()))
    return found


def test_the_commands_are_read_from_help():
    names = commands()
    assert {"init", "run", "plan", "serve", "export", "merge"} <= set(names)
    assert {"--out", "--max-usd", "--shard"} <= options("run")
    assert {"--p-infra-error", "--allow-remote-fetch"} <= options("serve")
    assert options() == {"--version"}


def test_every_option_of_every_command_is_documented():
    text = docs_text()
    documented = set(OPTION.findall(text))
    missing = {
        f"runner {name} {option}".replace("  ", " ")
        for name in ["", *commands()]
        for option in options(*[name] if name else [])
        if option not in documented
    }
    assert not missing, f"options no doc names: {sorted(missing)}"


def test_every_documented_option_exists():
    known = {"--help"}.union(options(), *(options(name) for name in commands()))
    stray = set(OPTION.findall(docs_text())) - known
    assert not stray, f"the docs name options no command has: {sorted(stray)}"


def test_an_option_written_after_a_command_is_that_command_s():
    names = set(commands())
    wrong = set()
    for name, rest in command_uses(docs_text()):
        if name in names:
            wrong |= {f"runner {name} {o}" for o in OPTION.findall(rest) if o not in options(name)}
    assert not wrong, f"the docs give commands options they do not have: {sorted(wrong)}"


def test_command_uses_finds_options_in_spans_and_shell_lines():
    text = "Try `runner run SPEC --out X` or\n```sh\nrunner plan S --rows 3  # --json\n```\n"
    assert command_uses(text) == [("run", " SPEC --out X"), ("plan", " S --rows 3")]


def test_serve_s_help_and_the_emulator_page_draw_each_fault_per_the_same_thing():
    # a fault drawn per call, per accepted submission or per request run: both say which
    unit = r"probability per (.+?) (?:of|to) "
    page = (ROOT / "docs" / "emulator.md").read_text(encoding="utf-8")
    helped = " ".join(help_text("serve").split())  # argparse wraps its lines
    for option in sorted(o for o in options("serve") if o.startswith("--p-")):
        [row] = re.findall(rf"^\| `{option} P` \|.*$", page, re.M)
        [said] = re.findall(rf"{option} P (.+?)(?= --|$)", helped)
        assert re.findall(unit, row) == re.findall(unit, said), option
