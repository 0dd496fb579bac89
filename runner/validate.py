"""`runner validate`: a spec path in, a Checked (spec, endpoint, request count) out, or SpecErrors
with every problem located at the YAML node it comes from: schema, grid, limits, endpoint inputs."""

from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from PIL import Image, ImageFile

from .endpoints import Endpoint, get_endpoint
from .errors import GridError, GridErrors, SpecError, SpecErrors, SpecPath
from .grid import Collapsed, expand
from .keys import canonical, is_url
from .models import Location, Request, Spec
from .plan import Cost, Pricing
from .product import compile_product
from .rowgrid import RowGrid
from .snapshot import InputSnapshot
from .spec import describe_error, label, read_spec
from .templates import has_template
from .yamlsource import Locator

MAX_ERRORS = 20
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


def check(
    path: str | Path,
    *,
    out: Path | None = None,
    each: Callable[[str, Cost], None] | None = None,
    collapsed: Collapsed | None = None,
    preview: int = 0,
) -> Checked:
    """The whole `runner validate` pipeline for one spec; raises SpecErrors on any problem.
    `each` is told every request's key and cost, in run order, during the one pass over the
    grid; `collapsed` counts the rows that repeat a request; Checked.first holds the first
    `preview` requests.

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
    n, remote = 0, 0
    first: tuple[Request, ...] = ()
    if grid is not None and loaded.expand_ok:
        n, remote, first = _expand(spec, endpoint, grid, inputs, found, each, collapsed, preview)
    if found.errors:
        raise found.as_error()
    warnings = (
        tuple(found.warning(path, message) for path, message in grid.warnings()) if grid else ()
    )
    sizes = tuple((name, len(source)) for name, source in grid.axes) if grid else ()
    return Checked(spec, endpoint, n, remote, warnings, snapshot, first, sizes)


def _expand(
    spec: Spec,
    endpoint: Endpoint,
    grid: RowGrid,
    inputs: _InputChecker,
    found: _Found,
    each: Callable[[str, Cost], None] | None = None,
    collapsed: Collapsed | None = None,
    preview: int = 0,
) -> tuple[int, int, tuple[Request, ...]]:
    """Expand the grid, checking each request (and handing its key and cost to `each`, so a
    plan or a run needs no second pass); returns (requests, requests with a URL input, the
    first `preview` requests). A plain product grid is checked per axis value instead of per
    row (product.py); any other grid, or one with a problem to report, row by row."""
    compiled = (
        compile_product(spec, endpoint, grid, inputs.field_problems, _not_an_image)
        if inputs.simple
        else None
    )
    if compiled is not None:
        if each is not None:
            for key, cost in compiled.rows():
                each(key, cost)
        first = tuple(itertools.islice(expand(spec, endpoint, grid), preview)) if preview else ()
        return compiled.count, compiled.remote, first
    n, cap, remote = 0, spec.max_requests * COUNT_PAST_LIMIT, 0
    file_fields = endpoint.file_fields
    pricing = Pricing(endpoint)
    kept: list[Request] = []
    try:
        for request in expand(spec, endpoint, grid, collapsed):
            n += 1
            if each is not None:
                each(request.key, pricing.of(request))
            if len(kept) < preview:
                kept.append(request)
            for f in file_fields:
                if is_url(request.input.get(f)):
                    remote += 1
                    break
            if n <= spec.max_requests:
                for field, message in inputs.problems(request.input):
                    found.input_problem(field, message, request, n, spec)
                for field, file in request.files.items():
                    if (problem := _not_an_image(file, spec.base_dir)) is not None:
                        found.input_problem(field, problem, request, n, spec)
            if n >= cap or (n >= spec.max_requests and found.full()):
                break
    except GridError as exc:
        found.add(exc.path, exc.message)
    if n > spec.max_requests:
        where: SpecPath = ("limits", "max_requests") if _has(spec, ("limits",)) else ("matrix",)
        limit = f"more than limits.max_requests ({spec.max_requests})"
        size = f"at least {n}" if n >= cap else str(n)
        found.add(where, f"the grid has {size} requests, {limit}")
    return n, remote, tuple(kept)


_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 0  # PIL refuses an image of twice as many


def _not_an_image(path: Path, base: Path | None = None) -> str | None:
    """Why a local input file is no image the server could decode, or None. The whole image
    is decoded, not just its header: a truncated JPEG or a stray notes.txt fails here, not as a
    422 per request once the run is paid for. The file is named relative to `base` (the spec's
    folder) when it lies inside it."""
    try:
        shown = str(path.relative_to(base)) if base is not None else path.name
    except ValueError:
        shown = str(path)
    try:
        stat = os.stat(path)
    except OSError as e:
        return f"{shown} cannot be read: {e.strerror or e}"
    problem = _decode_problem(os.fspath(path), stat.st_size, stat.st_mtime_ns)
    return f"{shown} {problem}" if problem else None


# Answers are None or one short line: room for every image of a grid that cycles through more
# images than it has rows to check (limits.max_requests), so none is decoded twice.
_IMAGES_CACHED = 65_536


@lru_cache(maxsize=_IMAGES_CACHED)
def _decode_problem(path: str, size: int, mtime_ns: int) -> str | None:
    """Keyed by size and mtime as well as the path: a million rows naming one image decode it
    once, and an image edited since is decoded again."""
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a script that set it must not let truncation by
    try:
        with warnings.catch_warnings():
            # Between the two bomb limits PIL only warns; the library never prints.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(path)
            except Image.DecompressionBombError:
                return f"is too large an image to read (over {2 * _MAX_PIXELS} pixels)"
            except OSError as e:
                if e.errno is not None:
                    return f"cannot be read: {e.strerror or e}"
                return "is not an image (no image format recognises it)"
            except ValueError:
                return "is not an image (no image format recognises it)"
            with img:
                img.draft(None, (1, 1))  # a JPEG still decodes all its data, at 1/8 the memory
                img.load()
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError...
        return f"is truncated or corrupt: {str(e) or type(e).__name__}"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    return None


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

    def problems(self, body: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        if not self.simple:
            errors = self.endpoint.input_validator.iter_errors(dict(body))
            return [self._describe(e, None) for e in errors]
        out: list[tuple[str | None, str]] = []
        for name in self.required:
            if name not in body:
                msg = f"missing required field '{name}' (set it in defaults, matrix or include)"
                out.append((None, msg))
        for name, value in body.items():
            if name not in self.validators:
                if self.closed:
                    out.append((name, f"'{name}' is not an input of {self.endpoint.id}"))
                continue
            key = (
                (name, value.__class__, value) if value.__class__ in _SCALARS else _key(name, value)
            )
            found = self.cache.get(key)
            if found is None:
                found = self.field_problems(name, value)
            if found:  # most values are fine: no generator for them
                out.extend((name, m) for m in found)
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
            self.cache[key] = [self._describe(e, name)[1] for e in found]
        return self.cache[key]

    def _describe(self, error: ValidationError, field: str | None) -> tuple[str | None, str]:
        path: SpecPath = ((field,) if field else ()) + tuple(error.absolute_path)
        name = label(path) if path else "the input"
        if error.validator == "required" and not path:
            missing = [k for k in error.validator_value if k not in error.instance]
            msg = f"missing required field '{missing[0]}' (set it in defaults, matrix or include)"
            return None, msg
        first = path[0] if path and isinstance(path[0], str) else None
        return first, describe_error(error, name)
