"""Grid expansion: a Spec and its Endpoint in, Requests out, lazily and in run order; and the
replay of validated rows for a run.

    product of axes (first slowest) → exclude → include → render templates → build body
    → collapse identical requests (first stays) → sample

Both go through the one engine (engine.py). Pure: reads only the spec's local files (sources,
images to hash); never prints or sends.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..endpoints import Endpoint
from ..models import Request, Spec
from .engine import Engine, Repeats, any_repeat, bottom_k
from .localfiles import LocalFiles
from .plan import Cost
from .rowgrid import RowGrid
from .shards import Shard
from .sources import axis_source

__all__ = [
    "Collapsed",
    "GridRows",
    "LocalFiles",
    "Replay",
    "ReplayRow",
    "axes",
    "expand",
]


@dataclass
class Collapsed:
    """Rows dropped as identical to an earlier request, filled in as `expand` runs: how many,
    and per cause (an axis that repeats a value, "include" rows, or "templates" that render
    alike) how many of them."""

    rows: int = 0
    by: dict[str, int] = field(default_factory=dict)

    def add(self, causes: list[str]) -> None:
        self.rows += 1
        for cause in causes:
            self.by[cause] = self.by.get(cause, 0) + 1


def expand(
    spec: Spec,
    endpoint: Endpoint,
    grid: RowGrid | None = None,
    collapsed: Collapsed | None = None,
) -> Iterator[Request]:
    """Every request of the spec, in run order. A generator: the spec's errors (bad sources,
    undefined template variables, unknown keys) raise on the first next(), before any request;
    a row that cannot be built raises when it is reached. `grid`: the spec's RowGrid when the
    caller has built it already."""
    engine = Engine(spec, endpoint, grid or RowGrid(spec, endpoint))
    causes = engine.causes() if collapsed is not None else None
    if spec.sample is None:  # lazily: nothing is worked out ahead of the consumer
        repeats = Repeats()  # flags kept for every row: 1 byte each
        for out in engine.blocks(block=1):
            for key, position in zip(out.keys, out.positions, strict=True):
                new = repeats.add(key)
                if causes is not None and collapsed is not None:
                    found = causes.add(position, not new)
                    if not new:
                        collapsed.add(found)
                if new:
                    yield engine.request(position, key)
            if out.stop is not None:
                engine.request(out.stop)  # raises the row's error
        return
    assert spec.sample.n >= 1, "the job schema requires sample.n >= 1"
    keys, positions = array("Q"), array("Q")
    for out in engine.blocks():
        keys.extend(out.keys)
        positions.extend(out.positions)
        if out.stop is not None:
            engine.request(out.stop)
    repeated = Repeats(keys).flags if any_repeat(keys) else bytearray(len(keys))
    if causes is not None and collapsed is not None:
        for position, repeat in zip(positions, repeated, strict=True):
            found = causes.add(position, bool(repeat))
            if repeat:
                collapsed.add(found)
    kept = [s for s, repeat in enumerate(repeated) if not repeat]
    for s in bottom_k(keys, kept, spec.sample.n, spec.sample.seed):
        yield engine.request(positions[s], keys[s])


class GridRows:
    """Validation's requests in run order, each as its key, the position of its row (see
    engine.Block) and its cost state, with the engine that builds a row's Request again."""

    def __init__(
        self,
        engine: Engine,
        keys: array[int],
        positions: array[int] | None,
        costs: array[int] | None = None,
    ) -> None:
        """`positions` None: request i is row i (positions increase, so the last one says).
        `costs`: each request's cost state (Engine.cost), when the run may need them."""
        assert positions is None or len(keys) == len(positions)
        assert costs is None or len(keys) == len(costs)
        self.engine, self.keys, self.positions, self.costs = engine, keys, positions, costs

    def __len__(self) -> int:
        return len(self.keys)

    def request(self, i: int) -> Request:
        """Request i, built again from its row. Its key is what the row makes now: another
        than keys[i] when a source or input changed since validation (the run's InputGuard
        says which); a GridError when the row no longer builds at all."""
        return self.engine.request(i if self.positions is None else self.positions[i])

    def cost(self, i: int) -> Cost:
        """Request i's Cost, as validation priced it."""
        assert self.costs is not None, "validation keeps the cost states"
        return self.engine.cost(self.costs[i]).cost


class ReplayRow:
    """One row of a Replay: its key at once, its Request built again when asked."""

    __slots__ = ("_i", "_rows", "key")

    def __init__(self, key: str, rows: GridRows, i: int) -> None:
        self.key, self._rows, self._i = key, rows, i

    def request(self) -> Request:
        return self._rows.request(self._i)


class Replay:
    """The rows of a run, replayed from validation's rows (GridRows): each gives its key at
    once and builds its Request again only when asked, so a resume builds one only for a row
    it sends. `shard`: only that part's rows."""

    def __init__(self, rows: GridRows, shard: Shard | None = None) -> None:
        self._rows, self._shard = rows, shard
        self._count: int | None = None

    def __len__(self) -> int:
        """This run's rows (a shard's part: counted by key once)."""
        if self._count is None:
            self._count = sum(1 for _ in self._indexes()) if self._shard else len(self._rows)
        return self._count

    def __iter__(self) -> Iterator[ReplayRow]:
        rows = self._rows
        rows.engine.rewind()
        for i in self._indexes():
            yield ReplayRow(f"{rows.keys[i]:016x}", rows, i)  # hex_key, inline: a million

    def costs(self) -> Iterator[tuple[str, Cost]]:
        """Each row's key and Cost, in run order, without building a Request."""
        rows = self._rows
        for i in self._indexes():
            yield f"{rows.keys[i]:016x}", rows.cost(i)

    def _indexes(self) -> Iterator[int]:
        keys, shard = self._rows.keys, self._shard
        if shard is None:
            return iter(range(len(keys)))
        return (i for i, value in enumerate(keys) if shard.holds_number(value))


def axes(spec: Spec) -> list[tuple[str, int]]:
    """(axis name, number of values) in matrix order, for `plan` output."""
    return [(name, len(axis_source(name, raw, spec.base_dir))) for name, raw in spec.matrix.items()]
