"""`runner validate`: a spec path in, a Checked (spec, endpoint, request count) out, or SpecErrors
with every problem located at the YAML node it comes from: schema, grid, limits, endpoint inputs."""

from __future__ import annotations

import bisect
import functools
import json
import math
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from ..endpoints import Endpoint, get_endpoint
from ..errors import GridError, GridErrors, SpecError, SpecErrors, SpecPath
from ..grid.engine import Engine, Repeats, any_repeat, bottom_k
from ..grid.expand import Collapsed, GridRows
from ..grid.localimages import inspect as inspect_image
from ..grid.plan import Cost
from ..grid.rowgrid import RowGrid
from ..grid.snapshot import InputSnapshot
from ..grid.templates import has_template
from ..keys import canonical
from ..models import Location, Request, Spec
from .load import describe_error, label, read_spec
from .yamlsource import Locator

MAX_ERRORS = 20
SCAN_BLOCK = 1 << 16  # rows taken from the engine's scan at a time
COUNT_PAST_LIMIT = 100  # an over-limit grid is counted up to 100x the limit, then "at least"
# Top-level input-schema keywords the per-field fast path understands; anything else (allOf,
# if/then, dependentRequired...) falls back to validating each whole body.
_SIMPLE = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "title",
    "description",
    "$schema",
    "$id",
}


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
    found = _Found(Path(path), loaded.spec.locate if loaded.spec else None)
    for error in loaded.errors:
        found.add_error(error)
    spec = loaded.spec
    if spec is None:
        raise found.as_error()
    endpoint = get_endpoint(spec.endpoint)
    assert endpoint is not None  # read_spec reports unknown endpoints
    snapshot = InputSnapshot.take(spec)  # before the grid reads them: a later edit is caught
    inputs = _InputChecker(endpoint)
    for key, value in canonical(dict(spec.defaults)).items():
        if key in endpoint.fields and not has_template(value):  # templates: checked per row
            for message in inputs.field_problems(key, value):
                found.add(("defaults", key), message)
    grid = None
    if loaded.grid_ok:
        try:
            grid = RowGrid(spec, endpoint, loaded.broken_axes)
        except GridErrors as exc:
            for e in exc.errors:
                found.add(e.path, e.message)
        except GridError as exc:
            found.add(exc.path, exc.message)
    walked = _Walked()
    if grid is not None and loaded.expand_ok:
        walked = _expand(spec, endpoint, grid, inputs, found, collapsed, preview)
    if found.errors:
        raise found.as_error()
    warnings = tuple(found.warning(where, message) for where, message in walked.warnings)
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
    inputs: _InputChecker,
    found: _Found,
    collapsed: Collapsed | None = None,
    preview: int = 0,
) -> _Walked:
    """Expand the grid (one scan, engine.py), collapse and sample it, then walk its requests
    in run order: count them, keep the first `preview`, and check each request that a cell
    flagged (a value the input schema refuses, an input that is no image, a variable that
    cannot render) as the contract's pipeline meets it."""
    not_an_image = functools.partial(_not_an_image, base=spec.base_dir)
    engine = Engine(spec, endpoint, grid, inputs.field_problems, not_an_image)
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
            _stopped(engine, scanned.stop, found)
            return _Walked()
        order = bottom_k(scanned.keys, order, spec.sample.n, spec.sample.seed)
    walked = _walk(engine, scanned, order, inputs, found, preview, spec, cap, not_an_image)
    if walked.n > spec.max_requests:
        where: SpecPath = ("limits", "max_requests") if _has(spec, ("limits",)) else ("matrix",)
        limit = f"more than limits.max_requests ({spec.max_requests})"
        size = f"at least {walked.n}" if walked.n >= cap else str(walked.n)
        found.add(where, f"the grid has {size} requests, {limit}")
    if not found.errors:
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
    inputs: _InputChecker,
    found: _Found,
    preview: int,
    spec: Spec,
    cap: int,
    not_an_image: Callable[[Path], str | None],
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
                    found.add(exc.path, exc.message)
                    return _Walked(n, remote, tuple(kept))
            n += 1
            distant = costs[states[s]].remote
            if len(kept) < preview:
                kept.append(request or engine.request(positions[s], keys[s]))
            remote += distant
            if request is not None and n <= spec.max_requests:
                for wrong in inputs.problems(request.input):
                    found.input_problem(wrong.field, wrong.message, request, n, spec)
                for name, file in request.files.items():
                    if (problem := not_an_image(file)) is not None:
                        found.input_problem(name, problem, request, n, spec)
            at += 1
        else:  # up to the next flagged row, or as far as the loop would go on
            end = bisect.bisect_left(order, look, at) if look > s else rows
            room = cap - n
            if found.full():
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
        if n >= cap or (n >= spec.max_requests and found.full()):
            return _Walked(n, remote, tuple(kept))
    if scanned.stop is not None:
        _stopped(engine, scanned.stop, found)
    return _Walked(n, remote, tuple(kept))


def _costs(engine: Engine, states: array[int]) -> tuple[tuple[Cost, int], ...]:
    """Each distinct Cost of the requests whose cost states are `states`, with its count."""
    counts: dict[Cost, int] = {}
    for state in sorted(set(states)):
        cost = engine.cost(state).cost
        counts[cost] = counts.get(cost, 0) + states.count(state)
    return tuple(counts.items())


def _stopped(engine: Engine, position: int, found: _Found) -> None:
    """The error of the row that ends the expansion."""
    try:
        engine.request(position)
    except GridError as exc:
        found.add(exc.path, exc.message)
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


def _not_an_image(path: Path, base: Path | None = None) -> str | None:
    """Why a local input file is no image the server could decode, or None (the whole image
    is decoded: localimages.py). The file is named relative to `base` (the spec's folder)
    when it lies inside it."""
    problem = inspect_image(path).problem
    if problem is None:
        return None
    try:
        shown = str(path.relative_to(base)) if base is not None else path.name
    except ValueError:
        shown = str(path)
    return f"{shown} {problem}"


def _has(spec: Spec, path: SpecPath) -> bool:
    """Whether the spec file spells out `path` (the locator knows every node it saw)."""
    return isinstance(spec.locate, Locator) and path in spec.locate


class _Found:
    """Located errors, each (line, col, message) once; past MAX_ERRORS they are only counted."""

    def __init__(self, file: Path, locate: Callable[[SpecPath], Location] | None) -> None:
        self.file = str(file)
        self.locate = locate or (lambda path: Location(1, 1))
        self.errors: list[SpecError] = []
        self.seen: set[tuple[int, int, str]] = set()
        self.hidden = 0

    def full(self) -> bool:
        return len(self.errors) >= MAX_ERRORS

    def add(self, path: SpecPath, message: str, context: str = "") -> None:
        loc = self.locate(path)
        self.add_error(SpecError(message, self.file, loc.line, loc.col), context)

    def add_error(self, error: SpecError, context: str = "") -> None:
        # The same problem from many rows is one error; the row context says where it first was.
        if (error.line, error.col, error.message) in self.seen:
            return
        self.seen.add((error.line, error.col, error.message))
        if self.full():
            self.hidden += 1
            return
        self.errors.append(SpecError(error.message + context, self.file, error.line, error.col))

    def as_error(self) -> SpecErrors:
        self.errors.sort(key=lambda e: (e.line, e.col))
        return SpecErrors(self.errors, hidden=self.hidden)

    def warning(self, path: SpecPath, message: str) -> str:
        loc = self.locate(path)
        return f"{self.file}:{loc.line}:{loc.col}: warning: {message}"

    def input_problem(
        self, field: str | None, message: str, request: Request, row: int, spec: Spec
    ) -> None:
        origin = request.origins.get(field) if field else None
        if origin is None:
            # Nothing in the spec set this field: point where it could be set.
            rows = [p[:2] for p in request.origins.values() if p[:1] == ("include",)]
            spots = [*rows, *(p for p in (("defaults",), ("matrix",)) if _has(spec, p))]
            spot = spots[0] if spots else ()
            self.add(spot, message)
        elif origin[:1] == ("matrix",):
            # The same node feeds many rows: name the first failing one, report the node once.
            skip = {field, *spec.defaults}
            self.add(origin, message, _row(row, request.vars, skip))
        else:
            self.add(origin, message)


def _row(n: int, values: Mapping[str, Any], skip: set[str | None]) -> str:
    """` (row 3: animal=owl, seed=2)`: the row's axis values, flattened and kept short."""
    flat: list[tuple[str, Any]] = []
    for name, value in values.items():
        pairs = value.items() if isinstance(value, Mapping) else [(name, value)]
        flat.extend((k, v) for k, v in pairs if k not in skip)
    shown = []
    for name, value in flat[:4]:
        text = value if isinstance(value, str) else json.dumps(value)
        shown.append(f"{name}={text if len(text) <= 24 else text[:21] + '...'}")
    more = ", ..." if len(flat) > 4 else ""
    return f" (row {n}: {', '.join(shown)}{more})" if shown else f" (row {n})"


# Values checked once per distinct value: scalars keyed by (type, value) as they are (1, 1.0
# and True are different inputs), anything else by its JSON text.
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CACHED = 65_536


# Field-schema keywords that only annotate: they never make a value invalid.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment"})


def _plain_check(schema: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    """For a field schema of a plain type with bounds (string with lengths, integer or number
    with minimum/maximum, boolean, null, or a list of those types), a test that a value
    plainly satisfies it; None for any other schema. The test may say False of a valid
    value (jsonschema then decides), never True of an invalid one."""
    extra = {k for k in schema if k not in _ANNOTATIONS and not k.startswith("x-")}
    if not extra <= {"type", "minLength", "maxLength", "minimum", "maximum"}:
        return None
    types = schema.get("type")
    kinds = [types] if isinstance(types, str) else types
    if not isinstance(kinds, list) or not kinds:
        return None
    low, high = schema.get("minimum"), schema.get("maximum")
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
    if not all(isinstance(b, int | float) for b in (low, high) if b is not None):
        return None
    if not isinstance(shortest, int) or not isinstance(longest, int | None):
        return None
    if not set(kinds) <= {"string", "integer", "number", "boolean", "null"}:
        return None

    def fine(value: Any) -> bool:
        if value is None:
            return "null" in kinds
        if isinstance(value, bool):
            return "boolean" in kinds
        if isinstance(value, str):
            return (
                "string" in kinds
                and shortest <= len(value)
                and (longest is None or len(value) <= longest)
            )
        number = (type(value) is int and ("integer" in kinds or "number" in kinds)) or (
            type(value) is float and "number" in kinds and math.isfinite(value)
        )
        return number and (low is None or value >= low) and (high is None or value <= high)

    return fine


def _key(name: str, value: Any) -> tuple[str, type, Any]:
    return (name, value.__class__, json.dumps(value, sort_keys=True, default=str))


@dataclass(frozen=True, slots=True)
class InputProblem:
    """What is wrong with a request body, and the input field it is about (None: the body)."""

    field: str | None
    message: str


class _InputChecker:
    """Checks request bodies against the endpoint's input schema, each distinct value once."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        schema = endpoint.input_schema
        self.simple = set(schema) <= _SIMPLE and schema.get("additionalProperties") in (None, False)
        self.closed = schema.get("additionalProperties") is False
        self.required: list[str] = list(schema.get("required", []))
        self.fields = endpoint.fields
        self.validators = {k: Draft202012Validator(v) for k, v in self.fields.items()}
        self.plain = {k: f for k, v in self.fields.items() if (f := _plain_check(v)) is not None}
        self.cache: dict[tuple[str, type, Any], list[str]] = {}

    def problems(self, body: Mapping[str, Any]) -> list[InputProblem]:
        if not self.simple:
            errors = self.endpoint.input_validator.iter_errors(dict(body))
            return [self._describe(e, None) for e in errors]
        out: list[InputProblem] = []
        for name in self.required:
            if name not in body:
                msg = f"missing required field '{name}' (set it in defaults, matrix or include)"
                out.append(InputProblem(None, msg))
        for name, value in body.items():
            if name not in self.validators:
                if self.closed:
                    out.append(
                        InputProblem(name, f"'{name}' is not an input of {self.endpoint.id}")
                    )
                continue
            key = (
                (name, value.__class__, value) if value.__class__ in _SCALARS else _key(name, value)
            )
            found = self.cache.get(key)
            if found is None:
                found = self.field_problems(name, value)
            if found:  # most values are fine: no generator for them
                out.extend(InputProblem(name, m) for m in found)
        return out

    def field_problems(self, name: str, value: Any) -> list[str]:
        """What is wrong with one value of the input field `name` (cached per value)."""
        plainly_fine = self.plain.get(name)
        if plainly_fine is not None and plainly_fine(value):
            return []  # a million distinct prompts need no million jsonschema runs
        key = (name, value.__class__, value) if value.__class__ in _SCALARS else _key(name, value)
        if key not in self.cache:
            if len(self.cache) >= _CACHED:  # a million distinct seeds must not pile up
                self.cache.clear()
            found = self.validators[name].iter_errors(value)
            self.cache[key] = [self._describe(e, name).message for e in found]
        return self.cache[key]

    def _describe(self, error: ValidationError, field: str | None) -> InputProblem:
        path: SpecPath = ((field,) if field else ()) + tuple(error.absolute_path)
        name = label(path) if path else "the input"
        if error.validator == "required" and not path:
            missing = [k for k in error.validator_value if k not in error.instance]
            msg = f"missing required field '{missing[0]}' (set it in defaults, matrix or include)"
            return InputProblem(None, msg)
        first = path[0] if path and isinstance(path[0], str) else None
        return InputProblem(first, describe_error(error, name))
