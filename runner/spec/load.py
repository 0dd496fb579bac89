"""Load a job spec: file -> safe YAML -> schema check (each error one located line) -> Spec.

Only the spec language is checked here; grid expansion and endpoint input checks are check.py's.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from ..endpoints import all_endpoints, get_endpoint, job_default, job_schema_document
from ..errors import SpecError, SpecErrors, SpecPath
from ..models import Execution, Sample, Spec
from .schemaerrors import reword, show
from .yamlsource import Locator, YamlError, load_yaml


@cache
def job_validator() -> Draft202012Validator:
    return Draft202012Validator(job_schema_document())


@dataclass(frozen=True)
class Loaded:
    """A spec file read as far as it goes: the Spec built from its valid parts (None when
    there is no endpoint to check against), every schema error, and what they leave usable."""

    spec: Spec | None
    errors: tuple[SpecError, ...]
    broken_axes: frozenset[str] = frozenset()  # matrix axes the schema rejected
    grid_ok: bool = True  # defaults, matrix, exclude and include can be checked
    expand_ok: bool = True  # ... and the whole grid expanded (no broken axis, sample, limits)


_GRID_PARTS = {"defaults", "matrix", "exclude", "include"}


def load_spec(path: str | Path, *, out: Path | None = None) -> Spec:
    """Read and check one spec file; raises SpecErrors (each located) when it is not valid."""
    loaded = read_spec(path, out=out)
    if loaded.errors:
        raise SpecErrors(list(loaded.errors))
    assert loaded.spec is not None
    return loaded.spec


def read_spec(path: str | Path, *, out: Path | None = None) -> Loaded:
    """Read one spec file and collect its schema errors without stopping at them, so validate
    can go on checking what they leave intact. Raises SpecErrors only when nothing can be read
    (not YAML, not a mapping, another version)."""
    path = Path(path)
    file = str(path)
    raw = _read(path, file)
    try:
        data, locate = load_yaml(raw.decode("utf-8-sig"))
    except YamlError as exc:
        raise SpecErrors([SpecError(exc.message, file, exc.line, exc.col)]) from None
    if data is None:
        raise SpecErrors([SpecError("the spec is empty (start with `version: 1`)", file)])
    if not isinstance(data, dict):
        loc = locate(())
        msg = f"the spec must be a mapping of keys (version, endpoint, ...), got {show(data)}"
        raise SpecErrors([SpecError(msg, file, loc.line, loc.col)])
    version = data.get("version")
    if type(version) is int and version != 1:
        loc = locate(("version",))
        msg = f"unsupported version {version} (this runner reads version 1)"
        raise SpecErrors([SpecError(msg, file, loc.line, loc.col)])
    problems = [p for e in job_validator().iter_errors(data) for p in reword(e)]
    endpoint = data.get("endpoint")
    if isinstance(endpoint, str) and endpoint and get_endpoint(endpoint) is None:
        problems.append((("endpoint",), _unknown_endpoint(endpoint)))
    problems += _report_axes(data)
    errors = tuple(_located(problems, locate, file).errors) if problems else ()
    # Each error's top-level key is left out of the Spec; a broken matrix axis is kept by
    # name (the grid knows it exists but does not build it).
    bad = {p[0] for p, _ in problems if p}
    known = set(job_validator().schema["properties"])
    broken = frozenset(str(p[1]) for p, _ in problems if len(p) > 1 and p[0] == "matrix")
    whole_matrix = any(p == ("matrix",) for p, _ in problems)
    if "endpoint" in bad or "endpoint" not in data:
        return Loaded(None, errors)
    usable = {k: v for k, v in data.items() if k not in bad or (k == "matrix" and not whole_matrix)}
    # An unknown top-level key that looks like a grid part (`matrx`) may hold its rows: the
    # grid's own checks would then report what that typo causes, so they wait for its fix.
    typos = {k for k in bad - known if difflib.get_close_matches(str(k), _GRID_PARTS, n=1)}
    grid_ok = not (bad & (_GRID_PARTS - {"matrix"})) and not whole_matrix and not typos
    expand_ok = grid_ok and not broken and not bad & {"sample", "limits"}
    spec = _build(usable, path, raw, locate, out)
    return Loaded(spec, errors, broken, grid_ok, expand_ok)


def _read(path: Path, file: str) -> bytes:
    try:
        if path.is_dir():
            raise SpecErrors([SpecError("is a folder, not a spec file", file)])
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecErrors([SpecError("file not found", file)]) from None
    except OSError as exc:
        msg = f"cannot read the spec: {exc.strerror or exc}"
        raise SpecErrors([SpecError(msg, file)]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecErrors([SpecError("not a text file (invalid UTF-8)", file, line)]) from None
    if "\x00" in text:
        raise SpecErrors([SpecError("not a text file (contains NUL bytes)", file)])
    return raw


def _build(data: dict[str, Any], path: Path, raw: bytes, locate: Locator, out: Path | None) -> Spec:
    base = path.resolve().parent
    output = out if out is not None else base / data.get("output", f"runs/{path.stem}")
    sample = _typed("sample", data)
    limits = _typed("limits", data)
    # A key the block does not write takes Execution's default, the schema's.
    execution = Execution(**_typed("execution", data))
    return Spec(
        path=path,
        base_dir=base,
        sha256=hashlib.sha256(raw).hexdigest(),
        version=1,
        name=data.get("name"),
        endpoint=data["endpoint"],
        backend=data.get("backend", job_default("backend")),
        output=Path(output).resolve(),
        defaults=data.get("defaults", {}),
        matrix=data.get("matrix", {}),
        exclude=tuple(data.get("exclude", ())),
        include=tuple(data.get("include", ())),
        sample=Sample(**sample) if "sample" in data else None,
        max_requests=limits.get("max_requests", job_default("limits", "max_requests")),
        max_usd=limits.get("max_usd"),
        report={k: str(v) for k, v in data.get("report", {}).items()},
        execution=execution,
        locate=locate,
    )


def _report_axes(data: dict[str, Any]) -> list[tuple[SpecPath, str]]:
    """`report: {x, y}` must name axes the spec sweeps (a matrix axis or an include key)."""
    report = data.get("report")
    if not isinstance(report, dict):
        return []
    matrix = data.get("matrix") if isinstance(data.get("matrix"), dict) else {}
    axes = list(matrix or {})
    for row in data.get("include") or []:
        if isinstance(row, dict):
            axes += [k for k in row if k not in axes]
    problems: list[tuple[SpecPath, str]] = []
    for which in ("x", "y"):
        name = report.get(which)
        if isinstance(name, str) and name not in axes:
            listed = ", ".join(axes) or "none"
            problems.append(
                (
                    ("report", which),
                    f"report.{which} {name!r} is not an axis of this spec (axes: {listed})",
                )
            )
    if isinstance(report.get("x"), str) and report.get("x") == report.get("y"):
        problems.append((("report", "y"), "report.x and report.y name the same axis"))
    return problems


def _located(problems: list[tuple[SpecPath, str]], locate: Locator, file: str) -> SpecErrors:
    seen: set[tuple[int, int, str]] = set()
    errors: list[SpecError] = []
    for path, message in problems:
        loc = locate(path)
        if (loc.line, loc.col, message) not in seen:
            seen.add((loc.line, loc.col, message))
            errors.append(SpecError(message, file, loc.line, loc.col))
    errors.sort(key=lambda e: (e.line, e.col))
    return SpecErrors(errors)


def _unknown_endpoint(name: str) -> str:
    known = sorted(all_endpoints())
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
    return f"unknown endpoint '{name}' ({hint})"


_PYTHON_TYPES: dict[str, Callable[[Any], Any]] = {"integer": int, "number": float}


def _typed(block: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A top-level block's values in the types the schema gives them: an integer written
    2.0 becomes 2, a number written 600 becomes 600.0. The block is schema-valid (a block
    with an error is left out of `data`)."""
    written: Mapping[str, Any] = data.get(block) or {}
    schema = job_schema_document()["properties"][block]["properties"]
    return {k: _PYTHON_TYPES.get(schema[k].get("type"), _unchanged)(v) for k, v in written.items()}


def _unchanged(value: Any) -> Any:
    return value
