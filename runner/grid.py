"""Grid expansion: a Spec and its Endpoint in, Requests out, lazily and in run order.

    product of axes (first slowest) → exclude → include → render templates → build body
    → collapse identical requests (first stays) → sample

Pure: reads only the spec's local files (sources, images to hash); never prints or sends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import os
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from .endpoints import Endpoint
from .errors import GridError
from .keys import KEY_HEX, KeySet, canonical_json, file_sha256, is_remote, request_key
from .models import Request, Spec
from .rowgrid import Row, RowGrid
from .sources import axis_source
from .templates import TemplateError, render

__all__ = ["FULL", "HANDLED", "KEY_ONLY", "Collapsed", "LocalFiles", "Replay", "axes", "expand"]

# A rendered row: the row, its key, the body as journaled, local files, inline data: URIs.
_Rendered = tuple[Row, str, dict[str, Any], dict[str, Path], dict[str, str]]


@dataclass
class Collapsed:
    """Rows dropped as identical to an earlier request, filled in as `expand` runs: how many,
    and per cause (an axis that repeats a value, "include" rows, or "templates" that render
    alike) how many of them."""

    rows: int = 0
    by: dict[str, int] = field(default_factory=dict)


def expand(
    spec: Spec,
    endpoint: Endpoint,
    grid: RowGrid | None = None,
    collapsed: Collapsed | None = None,
) -> Iterator[Request]:
    """Every request of the spec, in run order. A generator: the spec's errors (bad sources,
    undefined template variables, unknown keys) raise on the first next(), before any request.
    `grid`: the spec's RowGrid when the caller has built it already."""
    grid = grid or RowGrid(spec, endpoint)
    rendered = _unique(spec, endpoint, grid, collapsed)
    if spec.sample is not None:
        assert spec.sample.n >= 1, "the job schema requires sample.n >= 1"
        rendered = _bottom_k(rendered, spec.sample.n, spec.sample.seed)
    for row, key, body, files, inline in rendered:
        variables, origins = grid.describe(row)
        try:
            grid.render_vars(row, variables)
        except TemplateError as e:
            raise grid.template_error(row, e) from None
        if inline:  # vars name inline data by its sha256 too: no image bytes in the journal
            _inline_refs(variables, inline, body)
        yield Request(key, body, variables, files, origins, inline)


# What a run needs of a row it replays (Replay.rows): the whole request, its key alone, or
# nothing (the run has dealt with the row already: a settled row is only counted).
FULL, KEY_ONLY, HANDLED = 0, 1, 2


class Replay:
    """The keys of a spec's requests in run order, recorded during validation's pass, so a
    resume need not expand and hash the grid again for rows the journal has settled.

    rows(need) asks `need` what the run needs of each key: FULL yields the full Request (the
    grid is expanded again, lazily, only as far as the last row that is sent), KEY_ONLY a
    key-only Request (no body, vars or origins), HANDLED nothing. A key that the new
    expansion does not reach means the spec's inputs changed since validation: a GridError."""

    def __init__(
        self,
        expansion: Callable[[], Iterator[Request]],
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        self._expansion = expansion
        self._keep = keep  # a shard's part: other keys are not this run's rows
        self._keys = array("Q")  # 8 bytes a row, not a str object

    def add(self, key: str) -> None:
        """Record the next request's key (from validate.check's `each`)."""
        self._keys.append(int(key, 16))

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[Request]:
        return self.rows(lambda key: FULL)

    def rows(self, need: Callable[[str], int]) -> Iterator[Request]:
        full: Iterator[Request] | None = None
        keep = self._keep
        for value in self._keys:
            key = f"{value:0{KEY_HEX}x}"
            if keep is not None and not keep(key):
                continue
            wanted = need(key)
            if wanted == HANDLED:
                continue
            if wanted == KEY_ONLY:
                yield Request(key, {}, {})
                continue
            full = full or self._expansion()
            for request in full:
                if request.key == key:
                    yield request
                    break
            else:
                raise GridError(f"request {key} is no longer in the grid", ())


def _inline_refs(variables: dict[str, Any], inline: dict[str, str], body: dict[str, Any]) -> None:
    for name, value in variables.items():
        if name in inline:
            variables[name] = body[name]
        elif isinstance(value, dict) and inline.keys() & value.keys():
            variables[name] = {f: body[f] if f in inline else v for f, v in value.items()}


def _bottom_k(rendered: Iterator[_Rendered], n: int, seed: int) -> Iterator[_Rendered]:
    """Stable sampling: the n requests whose seeded hash of the key is smallest, in run order.
    One pass, a heap of n: exactly n (or all, if fewer), and a grown grid keeps every sampled
    request whose hash still ranks among the n smallest (k new rows change at most k)."""
    salt = hashlib.sha256(f"runner sample {seed}".encode()).digest()[:16]
    heap: list[tuple[int, int, _Rendered]] = []  # (-hash, -position, item): the largest on top
    for position, item in enumerate(rendered):
        rank = int.from_bytes(
            hashlib.blake2b(item[1].encode(), key=salt, digest_size=8).digest(), "big"
        )
        entry = (-rank, -position, item)
        if len(heap) < n:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)
    for _, _, item in sorted(heap, key=lambda e: -e[1]):
        yield item


def axes(spec: Spec) -> list[tuple[str, int]]:
    """(axis name, number of values) in matrix order, for `plan` output."""
    return [(name, len(axis_source(name, raw, spec.base_dir))) for name, raw in spec.matrix.items()]


def _unique(
    spec: Spec, endpoint: Endpoint, grid: RowGrid, collapsed: Collapsed | None = None
) -> Iterator[_Rendered]:
    """Rendered rows with repeated requests dropped (the first stays, order kept)."""
    seen = KeySet()
    fields, endpoint_id = endpoint.fields, endpoint.id
    local = LocalFiles(spec.base_dir)
    causes = _Causes(grid) if collapsed is not None else None
    for row in grid.rows():
        values = row.values
        body = {k: v for k, v in values.items() if k in fields}
        for k in row.templated:
            if k not in body:  # an empty csv cell left this field unset in this row
                continue
            try:
                body[k] = render(body[k], values, k, grid.literal_for(row))
            except TemplateError as e:  # origins are built only now, for the error's location
                raise grid.template_error(row, e) from None
        files: dict[str, Path] = {}
        inline: dict[str, str] = {}
        named: list[tuple[str, str]] = []  # (sha256 ref, name as written), for the causes only
        for k in endpoint.file_fields & body.keys():
            try:
                found = local.resolve(body[k])
            except OSError as e:
                raise GridError(
                    f"cannot read {k} file {body[k]!r}: {e.strerror}", grid.describe(row)[1][k]
                ) from None
            if found is not None:
                ref, where = found
                if causes is not None:
                    named.append((ref, body[k] if isinstance(where, Path) else "a data: URI"))
                if isinstance(where, Path):
                    files[k] = where
                else:
                    inline[k] = where
                body[k] = ref
        try:
            key = request_key(endpoint_id, body)
        except (TypeError, ValueError) as e:
            raise GridError(f"request body is not JSON: {e}", ()) from None
        if seen.add(key):
            if causes is not None:
                causes.saw(named)
            yield row, key, body, files, inline
        elif collapsed is not None and causes is not None:
            collapsed.rows += 1
            for cause in causes.of(row, named):
                collapsed.by[cause] = collapsed.by.get(cause, 0) + 1


class _Causes:
    """Why a row repeated an earlier request: the axes whose value in it repeats an earlier
    value of that axis, else "include" (an include row), else an input file whose bytes are
    those of another file an earlier request sent, else "templates" (rendered alike).
    Each axis's repeated positions are found on the first collapse, in one pass, hashed."""

    MAX_PAIRS = 3  # named pairs of identical files; past them, one "(others)" count

    def __init__(self, grid: RowGrid) -> None:
        self._grid = grid
        self._repeats: list[set[int]] | None = None
        self._first_name: dict[str, str] = {}  # sha256 ref -> the first name sent with it
        self._pairs: set[str] = set()

    def saw(self, named: list[tuple[str, str]]) -> None:
        """A request that was sent: the names its input files went by."""
        for ref, name in named:
            self._first_name.setdefault(ref, name)

    def of(self, row: Row, named: list[tuple[str, str]]) -> list[str]:
        if row.fixed is not None:
            return ["include"]
        if self._repeats is None:
            self._repeats = [_repeated(source) for _, source in self._grid.axes]
        names = [
            name
            for (name, _), (i, _), repeats in zip(
                self._grid.axes, row.combo, self._repeats, strict=True
            )
            if i in repeats
        ]
        return names or self._same_files(named) or ["templates"]

    def _same_files(self, named: list[tuple[str, str]]) -> list[str]:
        """Two differently named files with the same bytes are one input: its request too."""
        for ref, name in named:
            first = self._first_name.get(ref, name)
            if first != name:
                pair = f"identical input files ({first} = {name})"
                if pair in self._pairs or len(self._pairs) < self.MAX_PAIRS:
                    self._pairs.add(pair)
                    return [pair]
                return ["identical input files (others)"]
        return []


def _repeated(values: Any) -> set[int]:
    seen = KeySet()
    out: set[int] = set()
    for i, value in enumerate(values):
        digest = hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]
        if not seen.add(digest):
            out.add(i)
    return out


class LocalFiles:
    """File field values -> (journaled "sha256:<hex>", what is sent): a local file's absolute
    path, or a data: URI itself (hashed by its decoded content, so the manifest never holds
    image bytes); None for http(s) URLs.

    Remembers answers for one expansion, so a million rows naming one image stat it once."""

    def __init__(self, base_dir: Path) -> None:
        self._base = base_dir
        self._known: dict[str, tuple[str, Path | str] | None] = {}

    def resolve(self, value: Any) -> tuple[str, Path | str] | None:
        """Raises OSError when a local file cannot be read."""
        if not isinstance(value, str):
            return None  # not a path: the schema check reports it
        if value in self._known:
            return self._known[value]
        found: tuple[str, Path | str] | None = None
        if value[:5].lower() == "data:":
            found = ("sha256:" + hashlib.sha256(_data_bytes(value)).hexdigest(), value)
        elif not is_remote(value):
            path = Path(os.path.abspath(self._base / value))
            found = ("sha256:" + file_sha256(path), path)
        if len(self._known) >= 4096:  # bounded: a files axis of 100k images must not pile up
            self._known.clear()
        self._known[value] = found
        return found


def _data_bytes(uri: str) -> bytes:
    """The content of a data: URI (RFC 2397), base64 or percent-encoded; a malformed one is
    hashed as written (the server will refuse it, and says why)."""
    header, _, payload = uri.partition(",")
    if header.lower().endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error:
            return uri.encode()
    return unquote_to_bytes(payload)
