"""`runner validate`: a spec path in, a Checked (spec, endpoint, request count) out, or SpecErrors
with every problem located at the YAML node it comes from: schema, grid, limits, endpoint inputs."""

from __future__ import annotations

import bisect
import functools
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..endpoints import Endpoint, get_endpoint
from ..errors import GridError, GridErrors, SpecPath
from ..grid.engine import Engine, Repeats, any_repeat, bottom_k
from ..grid.expand import Collapsed, GridRows
from ..grid.plan import Cost
from ..grid.rowgrid import RowGrid
from ..grid.snapshot import InputSnapshot
from ..grid.templates import has_template
from ..keys import canonical
from ..models import Request, Spec
from .inputs import InputSchemaChecker, not_an_image
from .load import Loaded, read_spec
from .located import LocatedErrors, spells_out

SCAN_BLOCK = 1 << 16  # rows taken from the engine's scan at a time
COUNT_PAST_LIMIT = 100  # an over-limit grid is counted up to 100x the limit, then "at least"


@dataclass(frozen=True)
class Checked:
    """A spec that passed every check, with its endpoint and number of requests."""

    spec: Spec
    endpoint: Endpoint
    count: int
    # Requests with an http(s) URL in a file field: the offline emulator refuses to fetch them.
    remote_inputs: int = 0
    # Located lines, `file:line:col: warning: ...`: worth saying, not worth refusing the spec.
    warnings: tuple[str, ...] = ()
    inputs: InputSnapshot | None = None  # the source files as validated (run re-checks them)
    first: tuple[Request, ...] = ()  # the first `preview` requests
    axes: tuple[tuple[str, int], ...] = ()  # (matrix axis, number of values), in matrix order
    # The requests in run order as keys and rows, to build any one again (a run's Replay).
    rows: GridRows | None = None
    # Each distinct Cost among the requests, and how many have it (a plan's estimate).
    costs: tuple[tuple[Cost, int], ...] = ()


def check(
    path: str | Path,
    *,
    out: Path | None = None,
    collapsed: Collapsed | None = None,
    preview: int = 0,
) -> Checked:
    """The whole `runner validate` pipeline for one spec; raises SpecErrors on any problem.
    `collapsed` counts the rows that repeat a request; Checked.first holds the first
    `preview` requests; Checked.rows gives a run every request's key and cost again without
    a second pass over the grid.

    Every independent problem is found in one pass: schema errors do not stop the checks of
    what they leave intact (the defaults' values, template names, the other axes); only checks
    that depend on a broken part (expanding a grid with a broken axis) wait for its fix."""
    loaded = read_spec(path, out=out)
    located = LocatedErrors(Path(path), loaded.spec.locate if loaded.spec else None)
    for error in loaded.errors:
        located.add_error(error)
    spec = loaded.spec
    if spec is None:
        raise located.as_error()
    endpoint = get_endpoint(spec.endpoint)
    assert endpoint is not None  # read_spec reports unknown endpoints
    snapshot = InputSnapshot.take(spec)  # before the grid reads them: a later edit is caught
    inputs = InputSchemaChecker(endpoint)
    grid = checked_grid(loaded, spec, endpoint, inputs, located)
    walked = _Walked()
    if grid is not None and loaded.expand_ok:
        walked = _expand(spec, endpoint, grid, inputs, located, collapsed, preview)
    if located.errors:
        raise located.as_error()
    warnings = tuple(located.warning(where, message) for where, message in walked.warnings)
    sizes = tuple((name, len(source)) for name, source in grid.axes) if grid else ()
    return Checked(
        spec,
        endpoint,
        walked.n,
        walked.remote,
        warnings,
        snapshot,
        walked.first,
        sizes,
        walked.rows,
        walked.costs,
    )


def checked_grid(
    loaded: Loaded,
    spec: Spec,
    endpoint: Endpoint,
    inputs: InputSchemaChecker,
    located: LocatedErrors,
) -> RowGrid | None:
    """The checks before expansion, each problem added to `located`: the defaults' fixed
    endpoint fields against the input schema (templated ones are checked per row), then the
    grid's structure. None when the grid cannot be built."""
    for key, value in canonical(dict(spec.defaults)).items():
        if key in endpoint.fields and not has_template(value):
            for message in inputs.field_problems(key, value):
                located.add(("defaults", key), message)
    if not loaded.grid_ok:
        return None
    try:
        return RowGrid(spec, endpoint, loaded.broken_axes)
    except GridErrors as exc:
        for e in exc.errors:
            located.add(e.path, e.message)
    except GridError as exc:
        located.add(exc.path, exc.message)
    return None


@dataclass
class _Walked:
    """What the walk over the expanded rows found."""

    n: int = 0  # requests
    remote: int = 0  # requests with a URL input
    first: tuple[Request, ...] = ()
    rows: GridRows | None = None
    warnings: list[tuple[SpecPath, str]] = field(default_factory=list)
    costs: tuple[tuple[Cost, int], ...] = ()


def _expand(
    spec: Spec,
    endpoint: Endpoint,
    grid: RowGrid,
    inputs: InputSchemaChecker,
    located: LocatedErrors,
    collapsed: Collapsed | None = None,
    preview: int = 0,
) -> _Walked:
    """Expand the grid (one scan, engine.py), collapse and sample it, then walk its requests
    in run order: count them, keep the first `preview`, and check each request that a cell
    flagged (a value the input schema refuses, an input that is no image, a variable that
    cannot render) as the contract's pipeline meets it."""
    no_image = functools.partial(not_an_image, base=spec.base_dir)
    engine = Engine(spec, endpoint, grid, inputs.field_problems, no_image)
    cap = spec.max_requests * COUNT_PAST_LIMIT
    sampled = spec.sample is not None
    scanned = _Scanned(engine, inputs.simple)
    scanned.take(None if sampled else cap)
    repeat = bytearray()
    if _may_repeat(engine, scanned) and any_repeat(scanned.keys):
        unique = Repeats(scanned.keys)
        while not sampled and scanned.more and scanned.stop is None and len(unique) < cap:
            scanned.take(len(scanned.keys) + cap - len(unique))  # the uncounted repeats' worth
            unique.extend(scanned.keys[len(unique.flags) :])
        repeat = unique.flags
        if collapsed is not None:
            causes = engine.causes()
            for position, again in zip(scanned.positions, repeat, strict=True):
                found_causes = causes.add(position, bool(again))
                if again:
                    collapsed.add(found_causes)
    order: range | list[int] = (
        [s for s, again in enumerate(repeat) if not again] if repeat else range(len(scanned.keys))
    )
    if sampled:
        assert spec.sample is not None
        if scanned.stop is not None:  # the whole grid is expanded before a row is sampled
            _stopped(engine, scanned.stop, located)
            return _Walked()
        order = bottom_k(scanned.keys, order, spec.sample.n, spec.sample.seed)
    walked = _walk(engine, scanned, order, inputs, located, preview, spec, cap, no_image)
    if walked.n > spec.max_requests:
        where: SpecPath = (
            ("limits", "max_requests") if spells_out(spec, ("limits",)) else ("matrix",)
        )
        size = f"at least {walked.n}" if walked.n >= cap else str(walked.n)
        located.add(where, too_many(size, spec.max_requests))
    if not located.errors:
        keys = scanned.keys
        positions: array[int] | None = scanned.positions
        if not isinstance(order, range):
            keys = array("Q", (keys[s] for s in order))
            positions = array("Q", (scanned.positions[s] for s in order))
        elif positions and positions[-1] == len(positions) - 1:
            positions = None  # row i is position i (nothing excluded): 8 bytes a row spared
        states = scanned.states
        if not isinstance(order, range):
            states = array("L", (states[s] for s in order))
        walked.rows = GridRows(engine, keys, positions, states)
        walked.warnings = grid.warnings() + engine.warnings()
        walked.costs = _costs(engine, states)
    return walked


def too_many(size: str, limit: int) -> str:
    """The error of a grid with more requests than limits.max_requests; `size`: how many."""
    return (
        f"the grid has {size} requests, more than limits.max_requests ({limit}). HINT: raise "
        "limits.max_requests if you mean it, or take a part with sample: {n: ...}"
    )


def _may_repeat(engine: Engine, scanned: _Scanned) -> bool:
    """Whether two scanned rows may make one request: product rows that can (Scan.distinct),
    or an include row (a few: each one's key is counted among all the rows')."""
    if not engine.scan.distinct():
        return True
    include = len(engine.grid.include)
    if include == 0:
        return False
    if include > 16:
        return True
    keys, positions = scanned.keys, scanned.positions
    tail = zip(keys[-include:], positions[-include:], strict=True)
    return any(p >= engine.scan.product_size and keys.count(k) > 1 for k, p in tail)


def _walk(
    engine: Engine,
    scanned: _Scanned,
    order: range | list[int],
    inputs: InputSchemaChecker,
    located: LocatedErrors,
    preview: int,
    spec: Spec,
    cap: int,
    no_image: Callable[[Path], str | None],
) -> _Walked:
    """The requests in run order, as validation's loop meets them (see _expand): rows the
    scan flagged, and the first `preview`, one by one; the stretches between them counted in a
    tight loop (they hold nothing to report)."""
    keys, positions, states = scanned.keys, scanned.positions, scanned.states
    costs = {state: engine.cost(state) for state in set(states)}
    far = {state for state, cost in costs.items() if cost.remote}
    looks = iter(scanned.looks)
    look = next(looks, -1)
    n = remote = 0
    kept: list[Request] = []
    at, rows = 0, len(order)
    while at < rows:
        s = order[at]
        while -1 < look < s:
            look = next(looks, -1)
        if look == s or len(kept) < preview:
            request = None
            if look == s:
                try:  # the row's variables render here, as the pipeline reaches it
                    request = engine.request(positions[s], keys[s])
                except GridError as exc:
                    located.add(exc.path, exc.message)
                    return _Walked(n, remote, tuple(kept))
            n += 1
            distant = costs[states[s]].remote
            if len(kept) < preview:
                kept.append(request or engine.request(positions[s], keys[s]))
            remote += distant
            if request is not None and n <= spec.max_requests:
                for wrong in inputs.problems(request.input):
                    located.input_problem(wrong.field, wrong.message, request, n, spec)
                for name, file in request.files.items():
                    if (problem := no_image(file)) is not None:
                        located.input_problem(name, problem, request, n, spec)
            at += 1
        else:  # up to the next flagged row, or as far as the loop would go on
            end = bisect.bisect_left(order, look, at) if look > s else rows
            room = cap - n
            if located.full():
                room = min(room, spec.max_requests - n)
            stretch = order[at : min(end, at + room)]
            some_states: Sequence[int]
            if isinstance(stretch, range):  # every row, in scan order: the array, uncopied
                some_states = memoryview(states)[stretch.start : stretch.stop]
            else:
                some_states = array("L", (states[s] for s in stretch))
            remote += sum(1 for state in some_states if state in far) if far else 0
            n += len(stretch)
            at += len(stretch)
        if n >= cap or (n >= spec.max_requests and located.full()):
            return _Walked(n, remote, tuple(kept))
    if scanned.stop is not None:
        _stopped(engine, scanned.stop, located)
    return _Walked(n, remote, tuple(kept))


def _costs(engine: Engine, states: array[int]) -> tuple[tuple[Cost, int], ...]:
    """Each distinct Cost of the requests whose cost states are `states`, with its count."""
    counts: dict[Cost, int] = {}
    for state in sorted(set(states)):
        cost = engine.cost(state).cost
        counts[cost] = counts.get(cost, 0) + states.count(state)
    return tuple(counts.items())


def _stopped(engine: Engine, position: int, located: LocatedErrors) -> None:
    """The error of the row that ends the expansion."""
    try:
        engine.request(position)
    except GridError as exc:
        located.add(exc.path, exc.message)
    else:  # pragma: no cover
        raise AssertionError(f"row {position} ends the expansion without an error")


class _Scanned:
    """The engine's scan, taken as far as needed: every row's key, position, cost state, and
    the rows to look at; `stop`, a row that ends the expansion; `more`, rows not taken yet."""

    def __init__(self, engine: Engine, simple: bool) -> None:
        self._blocks = engine.blocks(SCAN_BLOCK, looked=not simple)
        self.keys, self.positions, self.states = array("Q"), array("Q"), array("L")
        self.looks: list[int] = []
        self.stop: int | None = None
        self.more = True

    def take(self, rows: int | None) -> None:
        """Scan on until `rows` rows (None: all), a stop, or the end."""
        while self.more and self.stop is None and (rows is None or len(self.keys) < rows):
            out = next(self._blocks, None)
            if out is None:
                self.more = False
                break
            self.keys.extend(out.keys)
            self.positions.extend(out.positions)
            self.states.extend(out.states)
            self.looks.extend(out.looks)
            self.stop = out.stop
