"""Grid expansion: a Spec and its Endpoint in, Requests out, lazily and in run order; and the
replay of validated rows for a run.

    product of axes (first slowest) → exclude → include → render templates → build body
    → collapse identical requests (first stays) → sample

Both go through the one engine (engine.py). Pure: reads only the spec's local files (sources,
images to hash); never prints or sends.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .endpoints import Endpoint
from .engine import Engine, Repeats, any_repeat, bottom_k
from .errors import GridError
from .keys import hex_key
from .localfiles import LocalFiles
from .models import Request, Spec
from .rowgrid import RowGrid
from .sources import axis_source

__all__ = [
    "FULL",
    "HANDLED",
    "KEY_ONLY",
    "Collapsed",
    "GridRows",
    "LocalFiles",
    "Replay",
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


# What a run needs of a row it replays (Replay.rows): the whole request, its key alone, or
# nothing (the run has dealt with the row already: a settled row is only counted).
FULL, KEY_ONLY, HANDLED = 0, 1, 2


class GridRows:
    """Validation's requests in run order, each as its key and the position of its row (see
    engine.Block), with the engine that builds a row's Request again."""

    def __init__(self, engine: Engine, keys: array[int], positions: array[int] | None) -> None:
        """`positions` None: request i is row i (positions increase, so the last one says)."""
        assert positions is None or len(keys) == len(positions)
        self.engine, self.keys, self.positions = engine, keys, positions

    def __len__(self) -> int:
        return len(self.keys)

    def request(self, i: int) -> Request:
        """Request i, built again from its row: a GridError when the row no longer makes the
        key that validation saw (a source or input changed since)."""
        key = hex_key(self.keys[i])
        request = self.engine.request(i if self.positions is None else self.positions[i])
        if request.key != key:
            raise GridError(f"request {key} is no longer in the grid", ())
        return request


class Replay:
    """The requests of a run, replayed from validation's rows (GridRows), so a resume builds
    a Request only for a row it sends.

    rows(need) asks `need` what the run needs of each key: FULL yields the full Request (built
    again from its row, and checked to make the key validation saw), KEY_ONLY a key-only
    Request (no body, vars or origins), HANDLED nothing."""

    def __init__(self, rows: GridRows, keep: Callable[[str], bool] | None = None) -> None:
        self._rows = rows
        self._keep = keep  # a shard's part: other keys are not this run's rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Request]:
        return self.rows(lambda key: FULL)

    def rows(self, need: Callable[[str], int]) -> Iterator[Request]:
        keep, rows = self._keep, self._rows
        rows.engine.rewind()
        for i, value in enumerate(rows.keys):
            key = f"{value:016x}"  # hex_key, inline: a resume replays a million keys
            if keep is not None and not keep(key):
                continue
            wanted = need(key)
            if wanted == HANDLED:
                continue
            if wanted == KEY_ONLY:
                yield Request(key, {}, {})
                continue
            yield rows.request(i)


def axes(spec: Spec) -> list[tuple[str, int]]:
    """(axis name, number of values) in matrix order, for `plan` output."""
    return [(name, len(axis_source(name, raw, spec.base_dir))) for name, raw in spec.matrix.items()]
