"""`runner run SPEC --shard I/N`: part I of N of a spec's requests, chosen by key, so that N
machines, accounts or people can split one job: the parts are disjoint and together exactly the
whole. Sharding comes after sampling and limits, which see the whole grid."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .models import Request


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        # keys are hex digests of the request: uniform, so the parts come out even
        return int(key, 16) % self.count == self.index - 1

    def select(self, requests: Iterable[Request]) -> Iterator[Request]:
        return (r for r in requests if self.holds(r.key))


def parse_shard(text: str) -> Shard:
    """ "I/N" with 1 <= I <= N; ValueError with the rule otherwise."""
    index, sep, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        shard = None
    if not sep or shard is None or not 1 <= shard.index <= shard.count:
        raise ValueError(f"--shard takes I/N with 1 <= I <= N (e.g. 2/3), not {text!r}")
    return shard
