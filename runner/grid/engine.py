"""One grid's expansion: a Spec, its Endpoint and its RowGrid in; out, the rows in run order as
keys (blocks), the Request of any row by its position (request), and the steps after the
scan: collapsing repeated requests, sampling, and why rows collapsed.

    memo.py   which axes each cell reads, and its results per combination of them
    scan.py   the rows in run order: product (first axis slowest) - exclude, then include
    here      a row's Request by its position; collapse; sample; causes

Every grid shape goes through it: validation (spec/check.py), a run's replay and runner.expand.
"""

from __future__ import annotations

import hashlib
import heapq
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..endpoints import Endpoint
from ..errors import GridError
from ..keys import KeySet, body_key, canonical_json, hex_key, request_key
from ..models import Request, Spec
from .cells import ABSENT, LOOK, STOP, Cell, Steps
from .exclude import Exclusion
from .localfiles import LocalFiles
from .memo import READ_ERRORS, Memo, Misplaced, Recipe
from .rowgrid import Row, RowGrid
from .scan import Block, RowCost, Scan
from .templates import TemplateError

__all__ = ["Causes", "Engine", "Repeats", "any_repeat", "bottom_k"]

HEAPED = 65_536  # a sample of up to this many is picked with a heap of its size


class Engine:
    """The expansion of one grid (see the module docstring). `problems` and `not_an_image`
    are validation's checks of one value and of one local input; without them the rows are
    expanded unchecked (runner.expand)."""

    def __init__(
        self,
        spec: Spec,
        endpoint: Endpoint,
        grid: RowGrid,
        problems: Callable[[str, Any], list[str]] | None = None,
        not_an_image: Callable[[Path], str | None] | None = None,
    ) -> None:
        assert grid.complete, "a grid with broken axes only checks"
        self.spec, self.endpoint, self.grid = spec, endpoint, grid
        self.steps = Steps(endpoint, LocalFiles(spec.base_dir), problems, not_an_image)
        self.memo = Memo(grid, self.steps)
        self.exclusion = Exclusion(grid, self.memo)
        self.scan = Scan(grid, self.memo, self.exclusion, endpoint.id)
        self._recipes = {p.name: p for p in self.memo.recipes}
        self._cursors: dict[int, tuple[Iterator[Any], int, Any]] = {}

    def cost(self, state: int) -> RowCost:
        """A row's Cost, and whether it has an input given as an http(s) URL."""
        return self.scan.costs.of(state)

    # --- the rows, as keys ----------------------------------------------------------------------

    def blocks(self, block: int = 1 << 62, looked: bool = False) -> Iterator[Block]:
        """Every row in run order, `block` rows at a time (Scan.blocks). When a cell worked
        out per visit turns out to read an axis deeper than it was placed, it is placed there
        and the scan starts again, the rows already handed out being skipped."""
        done = 0
        while True:
            start = 0
            try:
                for out in self.scan.blocks(block, looked):
                    rows = len(out.keys)
                    if start + rows > done or out.stop is not None:
                        yield _after(out, start, done)
                        done = start + rows
                    start += rows
                return
            except Misplaced as e:
                self.memo.deepen(e.recipe, e.axis)
                self.scan.place()

    # --- one row --------------------------------------------------------------------------------

    def request(self, position: int, key: int | None = None) -> Request:
        """The Request of the row at `position` (Block.positions); `key` when it is known
        already. Raises the GridError the row raises: a field that cannot render, be read
        or be spelt as JSON, then a variable that cannot render."""
        if position >= self.scan.product_size:
            return self._include(position - self.scan.product_size, key)
        row, values, vals, ix = self._product_row(position)
        body: dict[str, Any] = {}
        cells: dict[str, Cell] = {}
        for name in values:
            recipe = self._recipes.get(name)
            if recipe is not None and recipe.is_field:
                cells[name] = self._cell(recipe, ix, values, vals)
        self._raise(row, cells, self.grid.templated, values, vals)
        for name, cell in cells.items():
            body[name] = cell.value
        described = self.grid.describe(row)
        variables, origins = described.vars, described.origins
        for name in variables:
            recipe = self._recipes.get(name)
            if recipe is not None and not recipe.is_field:
                cell = self._cell(recipe, ix, values, vals)
                if cell.trouble & LOOK and isinstance(cell.value, TemplateError):
                    error = recipe.compute(values, vals).value  # the whole row names it exactly
                    raise self.grid.template_error(row, error)
                variables[name] = cell.value
        return self._request(key, cells, body, variables, origins)

    def _include(self, j: int, key: int | None) -> Request:
        row = self.grid.include[j]
        assert row.fixed is not None
        values, steps = row.values, self.steps
        cells = {
            n: steps.field(n, n in row.templated, ())(values, None)
            for n in values
            if n in steps.fields
        }
        self._raise(row, cells, row.templated, values, None)
        body = {n: cell.value for n, cell in cells.items()}
        variables, origins = dict(row.fixed.vars), dict(row.fixed.origins)
        for name, raw in variables.items():
            cell = steps.var(name, raw, values, (), name in self.grid.objects)
            if isinstance(cell.value, TemplateError):
                raise self.grid.template_error(row, cell.value)
            variables[name] = cell.value
        return self._request(key, cells, body, variables, origins)

    def _request(
        self,
        key: int | None,
        cells: dict[str, Cell],
        body: dict[str, Any],
        variables: dict[str, Any],
        origins: dict[str, Any],
    ) -> Request:
        if key is None:
            fragments = "".join(cells[n].fragment for n in sorted(cells))
            key = body_key(self.scan.head, fragments)
        files: dict[str, Path] = {}
        inline: dict[str, str] = {}
        for name, cell in cells.items():
            if isinstance(cell.local, Path):
                files[name] = cell.local
            elif isinstance(cell.local, str):
                inline[name] = cell.local
        if inline:  # vars name inline data by its sha256 too: no image bytes in the journal
            for name, value in variables.items():
                if name in inline:
                    variables[name] = body[name]
                elif isinstance(value, dict) and inline.keys() & value.keys():
                    variables[name] = {f: body[f] if f in inline else v for f, v in value.items()}
        return Request(hex_key(key), body, variables, files, origins, inline)

    def _raise(
        self,
        row: Row,
        cells: dict[str, Cell],
        templated: frozenset[str],
        values: dict[str, Any],
        vals: Sequence[Any] | None,
    ) -> None:
        """The error of a row whose field cannot be built, as the contract orders them:
        templates (fields in name order), then local files, then the body's JSON."""
        if not any(c.trouble & STOP for c in cells.values()):
            return
        exact = {
            n: self._recipes[n].compute(values, vals) if vals is not None else c
            for n, c in cells.items()
            if c.trouble & STOP
        }
        for name in sorted(exact):
            if name in templated and isinstance(exact[name].value, TemplateError):
                raise self.grid.template_error(row, exact[name].value)
        for name in sorted(exact):
            error = exact[name].value
            if isinstance(error, OSError):
                path = self.grid.describe(row).origins[name]
                raise GridError(
                    f"cannot read {name} file {exact[name].written!r}: {error.strerror}", path
                )
        body = {n: exact[n].written if n in exact else c.value for n, c in cells.items()}
        try:
            request_key(self.endpoint.id, body)
        except (TypeError, ValueError) as e:
            raise GridError(f"request body is not JSON: {e}", ()) from None
        raise AssertionError(f"a row that stops has no error: {exact}")  # pragma: no cover

    def _cell(self, recipe: Recipe, ix: Sequence[int], values: Any, vals: Sequence[Any]) -> Cell:
        return self.memo.cell(recipe, ix, values, vals)

    def _product_row(self, position: int) -> tuple[Row, dict[str, Any], list[Any], list[int]]:
        """Product row `position`: its Row, its values (as the contract builds them: the
        defaults, then each axis's names in matrix order), its value per axis, its index per
        axis."""
        values = dict(self.grid.defaults)
        vals: list[Any] = []
        ix: list[int] = []
        for axis, weight in zip(self.memo.axes, self.scan.weights, strict=True):
            i = position // weight % axis.size
            value = axis.held[i] if axis.held is not None else self._streamed(axis.index, i)
            axis.bind(values, value)
            vals.append(value)
            ix.append(i)
        row = Row(values, self.grid.templated, tuple(zip(ix, vals, strict=True)))
        return row, values, vals, ix

    def rewind(self) -> None:
        """Read long axes from their files' start again (a run's replay reads them afresh)."""
        self._cursors.clear()

    def _streamed(self, a: int, i: int) -> Any:
        """Value i of a streamed axis, read on from the last one asked for (a run asks in
        order; an earlier index starts the file again)."""
        it, at, value = self._cursors.get(a, (iter(()), 0, None))
        if i < at - 1 or a not in self._cursors:
            it, at = self.memo.axes[a].values(), 0
        while at <= i:
            try:
                value = next(it, ABSENT)
            except READ_ERRORS as e:
                raise self.memo.axes[a].unreadable(e) from None
            if value is ABSENT:
                raise GridError(
                    f"axis {self.memo.axes[a].name!r} has fewer values than when it was checked",
                    self.memo.axes[a].source.path,
                )
            at += 1
        self._cursors[a] = (it, at, value)
        return value

    # --- after the scan -------------------------------------------------------------------------

    def warnings(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(where, what) for exclude entries that match no product row."""
        matched = (
            self.exclusion.matched() if self.grid.has_product else [False] * len(self.grid.exclude)
        )
        return [
            (("exclude", j), "this exclude entry matches no row, so it drops nothing")
            for (j, _), hit in zip(self.grid.exclude, matched, strict=True)
            if not hit
        ]

    def causes(self) -> Causes:
        """Why rows repeat an earlier request, told the scanned rows one by one."""
        return Causes(self)


def _after(out: Block, start: int, done: int) -> Block:
    """The part of a block (whose first row is scan row `start`) from scan row `done` on."""
    if start >= done:
        return out
    skip = done - start
    part = Block(out.keys[skip:], out.positions[skip:], out.states[skip:])
    part.looks = [s for s in out.looks if s >= done]
    part.stop = out.stop
    return part


# --- collapse and sample ------------------------------------------------------------------------


def any_repeat(keys: Sequence[int]) -> bool:
    """Whether any key repeats (usually none does). Keys are uniform 64-bit hashes: they are
    first sorted into 2**24 buckets by their top bits, a byte each, and only the keys of
    buckets met twice (a few percent) are compared: a million keys take 16 MB, not the 60 MB
    of a set or a sorted list of them."""
    if len(keys) < 1 << 16:
        return len(set(keys)) != len(keys)
    seen = bytearray(1 << 24)
    twice = set()  # buckets holding two keys or more
    for key in keys:
        bucket = key >> 40
        if seen[bucket]:
            twice.add(bucket)
        else:
            seen[bucket] = 1
    found: set[int] = set()
    for key in keys:
        if key >> 40 in twice:
            if key in found:
                return True
            found.add(key)
    return False


class Repeats:
    """Which rows repeat an earlier row's key (the first stays), told the keys in run order:
    `flags`, 1 per repeating row; len(), the rows that stay."""

    def __init__(self, keys: Iterable[int] = ()) -> None:
        self._seen = KeySet()
        self.flags = bytearray()
        self._stay = 0
        self.extend(keys)

    def add(self, key: int) -> bool:
        """The next row's key; True when it stays (no earlier row had it)."""
        new = self._seen.add(hex_key(key))
        self.flags.append(not new)
        self._stay += new
        return new

    def extend(self, keys: Iterable[int]) -> None:
        for key in keys:
            self.add(key)

    def __len__(self) -> int:
        return self._stay


def bottom_k(keys: Sequence[int], order: range | list[int], n: int, seed: int) -> range | list[int]:
    """Stable sampling: of the rows `order` names (indices into keys, in run order), the n
    whose seeded hash of the key is smallest, in run order. Exactly n (or all, if fewer), and
    a grown grid keeps every sampled request whose hash still ranks among the n smallest.
    Equal hashes (none in practice) keep the earlier row. A heap of n entries; for a large n,
    the rows whose hash is at most the n-th smallest (a few passes over 8 bytes a row)."""
    if n >= len(order):
        return order
    salt = hashlib.sha256(f"runner sample {seed}".encode()).digest()[:16]
    blake = hashlib.blake2b
    ranks = array(
        "Q",
        (
            int.from_bytes(blake(f"{keys[s]:016x}".encode(), key=salt, digest_size=8).digest())
            for s in order
        ),
    )
    if n > HEAPED:  # the n-th smallest hash, found by counting the hashes' top 16 bits
        counts = [0] * (1 << 16)
        for rank in ranks:
            counts[rank >> 48] += 1
        top = below = 0
        while below + counts[top] < n:
            below += counts[top]
            top += 1
        last = sorted(rank for rank in ranks if rank >> 48 == top)[n - below - 1]
        below = sum(1 for rank in ranks if rank < last)
        picked = []
        for s, rank in zip(order, ranks, strict=True):
            if rank < last or (rank == last and below < n):
                below += rank == last
                picked.append(s)
        return picked
    heap: list[tuple[int, int]] = []  # (-rank, -row): the largest rank on top
    for s, rank in zip(order, ranks, strict=True):
        entry = (-rank, -s)
        if len(heap) < n:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)
    return sorted(-s for _, s in heap)


class Causes:
    """Why a row repeated an earlier request, as recipe says: the axes whose value in it repeats
    an earlier value of that axis, else "include" (an include row), else an input file whose
    bytes are those of another file an earlier request sent, else "templates" (rendered
    alike). Each axis's repeated values are found on the first collapse, in one pass."""

    MAX_PAIRS = 3  # named pairs of identical files; past them, one "(others)" count

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._first_name: dict[str, str] = {}
        self._pairs: set[str] = set()
        self._repeated: list[set[int]] | None = None
        self._files = [
            p for p in engine.memo.recipes if p.is_field and p.name in engine.steps.file_fields
        ]

    def add(self, position: int, repeat: bool) -> list[str]:
        """The next scanned row: the causes of its collapse (none for a row that stays)."""
        named = self._named(position)
        if not repeat:
            for ref, name in named:
                self._first_name.setdefault(ref, name)
            return []
        return self._of(position, named)

    def _named(self, position: int) -> list[tuple[str, str]]:
        """The row's local input files: (sha256 reference, the name it went by)."""
        engine = self._engine
        if position >= engine.scan.product_size:
            row = engine.grid.include[position - engine.scan.product_size]
            steps = engine.steps
            cells = [
                steps.field(f, f in row.templated, ())(row.values, None)
                for f in sorted(steps.file_fields & row.values.keys())
            ]
        elif self._files:
            _, values, vals, ix = engine._product_row(position)
            cells = [engine.memo.cell(recipe, ix, values, vals) for recipe in self._files]
        else:
            return []
        found = []
        for cell in cells:
            if cell.value is not ABSENT and cell.local is not None:
                name = cell.written if isinstance(cell.local, Path) else "a data: URI"
                found.append((cell.value, name))
        return found

    def _of(self, position: int, named: list[tuple[str, str]]) -> list[str]:
        engine = self._engine
        if position >= engine.scan.product_size:
            return ["include"]
        if self._repeated is None:
            self._repeated = [_repeated(axis.values()) for axis in engine.memo.axes]
        names = []
        for axis, weight, repeated in zip(
            engine.memo.axes, engine.scan.weights, self._repeated, strict=True
        ):
            if position // weight % axis.size in repeated:
                names.append(axis.name)
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


def _repeated(values: Iterable[Any]) -> set[int]:
    """The indices of an axis's values that repeat an earlier value (one JSON spelling)."""
    seen = KeySet()
    out: set[int] = set()
    for i, value in enumerate(values):
        text = canonical_json(value).encode("utf-8", "surrogatepass")  # a var may hold one
        digest = hashlib.sha256(text).hexdigest()[:16]
        if not seen.add(digest):
            out.add(i)
    return out
