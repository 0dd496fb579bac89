"""Counts in words for messages: `counted(1, "request")` is "1 request", never "1 requests"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`counted(2, "row")` is "2 rows"; `plural` for a noun that takes more than an "s"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
