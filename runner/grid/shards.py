"""`runner run SPEC --shard I/N`: part I of N of a spec's requests, chosen by key, so that N
machines, accounts or people can split one job: the parts are disjoint and together exactly the
whole. Sharding comes after sampling and limits, which see the whole grid."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import UsageError
from ..models import Request


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __post_init__(self) -> None:
        if not (type(self.index) is int and type(self.count) is int):
            raise UsageError(f"a shard is I/N, two integers, not {self.index!r}/{self.count!r}")
        if not 1 <= self.index <= self.count:
            raise UsageError(f"a shard is I/N with 1 <= I <= N (e.g. 2/3), not {self}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        return self.holds_number(int(key, 16))

    def holds_number(self, key: int) -> bool:
        """holds() for a key as its number (validation keeps keys so)."""
        # keys are hex digests of the request: uniform, so the parts come out even
        return key % self.count == self.index - 1

    def select(self, requests: Iterable[Request]) -> Iterator[Request]:
        return (r for r in requests if self.holds(r.key))


def parse_shard(text: str) -> Shard:
    """ "I/N" with 1 <= I <= N; ValueError with the rule otherwise."""
    index, sep, count = text.partition("/")
    try:
        if sep:
            return Shard(int(index), int(count))
    except (ValueError, UsageError):  # not a number; out of range
        pass
    raise ValueError(f"--shard takes I/N with 1 <= I <= N (e.g. 2/3), not {text!r}")
