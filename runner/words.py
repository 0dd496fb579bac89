"""Words for messages: counts (`counted(1, "request")` is "1 request", never "1 requests")
and paths as the user would type them."""

from __future__ import annotations

from pathlib import Path


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`counted(2, "row")` is "2 rows"; `plural` for a noun that takes more than an "s"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def shown_path(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)
