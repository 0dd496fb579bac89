"""The rows of a grid in run order, as keys: a Memo and the exclude masks in, Blocks out, each
row with its 64-bit key, its position, its cost state and whether the validation walk must
look at it: product rows (first axis slowest) minus exclude, then include rows.

The product is nested loops, one per axis of more than one value. Each loop, at each of its
values, fixes the cells placed at its depth (a table lookup, or worked out then) as one
LevelCell: their key fragments, trouble, exclude mask and billed facts. A row is then a few
lookups, one string format of the fragments in name order (a %-template with the outer loops'
fragments written in), and one sha256.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..keys import body_key, key_head, key_text, text_key
from .cells import ABSENT, LOOK, OK, STOP, Cell
from .exclude import Exclusion
from .memo import READ_ERRORS, Axis, Memo, Recipe
from .plan import Cost, Pricing
from .rowgrid import RowGrid

INNER_FRAME_FROM = 8  # an innermost loop this long gets the other loops' fragments written in

# One axis value's part of a row: (key fragments of the fields it fixes, trouble, exclude
# mask, cost part).
LevelCell = tuple[tuple[str, ...], int, int, int]


@dataclass
class Block:
    """Consecutive rows of a scan: `keys`, `positions` (product rows by their number in the
    whole product, include row j as product size + j) and cost `states` per row; `looks`,
    the scan numbers of rows the validation walk must look at; `stop`, the position of a row
    after these that ends the expansion (one of its fields cannot be built)."""

    keys: array[int] = field(default_factory=lambda: array("Q"))
    positions: array[int] = field(default_factory=lambda: array("Q"))
    states: array[int] = field(default_factory=lambda: array("L"))
    looks: list[int] = field(default_factory=list)
    stop: int | None = None


@dataclass(frozen=True, slots=True)
class RowCost:
    """What a row costs, and whether it has an input given as an http(s) URL."""

    cost: Cost
    remote: bool


class Costs:
    """What each row costs, interned: a row's billed facts (and whether it has a URL input)
    are joined one axis value's part at a time into a small state number; `of` gives its
    Cost, once per distinct state."""

    def __init__(self, pricing: Pricing) -> None:
        self._pricing = pricing
        self._parts: dict[tuple[tuple[tuple[str, Any], ...], bool], int] = {((), False): 0}
        self._part_list: list[tuple[tuple[tuple[str, Any], ...], bool]] = [((), False)]
        self._states = dict(self._parts)  # the same numbering: part 0 is the empty state
        self._state_list = list(self._part_list)
        self._joined: dict[tuple[int, int], int] = {}
        self._costs: dict[int, RowCost] = {}

    def part(self, cells: Sequence[tuple[str, Cell]]) -> int:
        """The number of the part that these (field, cell) give to a row."""
        facts = tuple(sorted((n, c.fact) for n, c in cells if c.value is not ABSENT))
        return _intern((facts, any(c.remote for _, c in cells)), self._parts, self._part_list)

    def join(self, state: int, part: int) -> int:
        """The state of a row that adds `part` to `state`."""
        found = self._joined.get((state, part))
        if found is None:
            facts, remote = self._state_list[state]
            more, far = self._part_list[part]
            key = (tuple(sorted(facts + more)), remote or far)
            found = _intern(key, self._states, self._state_list)
            self._joined[(state, part)] = found
        return found

    def of(self, state: int) -> RowCost:
        """The RowCost of a row's state."""
        found = self._costs.get(state)
        if found is None:
            facts, remote = self._state_list[state]
            found = self._costs[state] = RowCost(self._pricing.cost(facts), remote)
        return found


def _intern(key: Any, numbers: dict[Any, int], keys: list[Any]) -> int:
    """key's number in `keys`; a key that is no dict key (a list where a number belongs, which
    validation reports) gets a new number each time."""
    try:
        found = numbers.get(key)
    except TypeError:
        keys.append(key)
        return len(keys) - 1
    if found is None:
        found = numbers[key] = len(keys)
        keys.append(key)
    return found


class Level:
    """One loop of the product: an axis of more than one value and the cells placed there."""

    def __init__(
        self, axis: Axis, recipes: list[Recipe], memo: Memo, exclusion: Exclusion, costs: Costs
    ) -> None:
        self.axis = axis
        # Fields first, in name order (Memo's order), then the variables that may not render
        # (a variable whose every tabled value renders has nothing to tell the scan).
        self.recipes = [
            r
            for r in recipes
            if r.is_field or (r.scanned and (r.table is None or any(c.trouble for c in r.table)))
        ]
        recipes = self.recipes
        self.fields = [r for r in recipes if r.is_field]
        self._fields = len(self.fields)
        billed = memo.steps.billed
        self._billed = [
            (i, r.name) for i, r in enumerate(recipes) if r.is_field and r.name in billed
        ]
        self._memo, self._exclusion, self._costs = memo, exclusion, costs
        self.evaluated = any(r.table is None for r in recipes)
        self.wants_values = self.evaluated  # Scan.place: also when a deeper loop evaluates
        self.deeper: list[int] = []  # the axes of the loops inside this one (Scan.place)
        # The same LevelCells for every visit when each cell here reads this axis alone.
        self.static: list[LevelCell] | None = None
        if axis.held is not None and all(r.deps == (axis.index,) and r.table for r in recipes):
            self.static = [
                self.combine([r.table[i] for r in recipes if r.table], exclusion.at(axis, i, v))
                for i, v in enumerate(axis.held)
            ]

    def combine(self, cells: Sequence[Cell], mask: int) -> LevelCell:
        """The LevelCell of one value from its cells (in the order of self.recipes)."""
        trouble = OK
        for cell in cells:
            trouble |= cell.trouble
        fragments = tuple([cell.fragment for cell in cells[: self._fields]])
        part = 0
        if self._billed:
            part = self._costs.part([(name, cells[i]) for i, name in self._billed])
        return fragments, trouble, mask, part

    def visit(
        self, ix: list[int], row: list[Any], above: dict[str, Any] | None
    ) -> Iterator[tuple[int, LevelCell, dict[str, Any] | None]]:
        """This loop's values in the row bound so far (ix: the value index per axis, row: the
        value per axis, None where unbound; above: the row's names, when a cell worked out
        here or deeper needs them): (index, LevelCell, the row's names with this value)."""
        axis, a, deeper, static = self.axis, self.axis.index, self.deeper, self.static
        # (never None when a cell here is worked out: Scan.place sets wants_values)
        bound: Any = dict(above) if self.wants_values and above is not None else None
        plain = axis.name if axis.fields is None else None
        bind, combine, memo, fields = axis.bind, self.combine, self._memo, self._fields
        exclusion = self._exclusion
        masks = exclusion.held[a] if exclusion.active else None
        # Per cell: its table and where this axis's values start in it, or how to work it out.
        ix[a] = 0
        ways = [
            (r.table, r.index(ix) if r.table is not None else 0, r.compute) for r in self.recipes
        ]
        # One cell worked out per value, and nothing else here: the long axis of a big grid.
        alone = None
        if len(ways) == 1 and not self._billed:
            table, _, compute = ways[0]
            alone = compute if table is None else None
        try:
            for i, value in enumerate(axis.values()):
                ix[a] = i
                row[a] = value
                for b in deeper:
                    row[b] = None
                if bound is not None:
                    if plain is not None:
                        bound[plain] = value
                    else:
                        bind(bound, value)
                if static is not None:
                    yield i, static[i], bound
                    continue
                mask = 0
                if masks is not None:
                    mask = masks[i]
                elif exclusion.active:
                    mask = exclusion.mask(axis, value)
                lc: LevelCell
                if alone is not None:
                    cell = alone(bound, row)
                    lc = (cell.fragment,) if fields else (), cell.trouble, mask, 0
                else:
                    lc = combine(
                        [
                            table[start + i] if table is not None else compute(bound, row)
                            for table, start, compute in ways
                        ],
                        mask,
                    )
                if lc[1]:  # a template error may be a name of an axis this loop leaves unbound
                    for (table, _, _), recipe in zip(ways, self.recipes, strict=True):
                        if table is None:
                            memo.evaluate_here(recipe, bound, row)
                yield i, lc, bound
        except READ_ERRORS as e:  # a long axis's file, read again, is gone or spoilt
            raise axis.unreadable(e) from None


class Scan:
    """The rows of one grid, in run order (see the module docstring)."""

    def __init__(self, grid: RowGrid, memo: Memo, exclusion: Exclusion, endpoint_id: str):
        self.grid, self.memo, self.exclusion = grid, memo, exclusion
        self.head = key_head(endpoint_id)
        self.costs = Costs(memo.steps.pricing)
        self.product_size = 0
        if grid.has_product:
            self.product_size = 1
            for axis in memo.axes:
                self.product_size *= axis.size
        self.place()

    def place(self) -> None:
        """Place the cells in their loops (again, after a cell turned out to read a deeper
        axis) and spell the fragments' frame."""
        memo = self.memo
        varying = [a for a in memo.axes if a.level >= 0]
        self.levels = [
            Level(
                a, [p for p in memo.recipes if p.level == a.level], memo, self.exclusion, self.costs
            )
            for a in varying
        ]
        # a row's position: its value index per axis, mixed radix (the last axis fastest)
        self.weights = [0] * len(memo.axes)
        weight = 1
        for axis in reversed(memo.axes):
            self.weights[axis.index] = weight
            weight *= axis.size
        # The body's fields in name order: a cell every row shares as its fragment, any
        # other as (loop, its place among that loop's fields).
        constant = [(r, r.table[0]) for r in memo.recipes if r.level < 0 and r.table]
        shared = {id(r): c.fragment for r, c in constant}
        self.slots: list[str | tuple[int, int]] = [
            shared[id(r)] if r.level < 0 else (r.level, self.levels[r.level].fields.index(r))
            for r in memo.recipes
            if r.is_field
        ]
        # str.format of the loops' fragment tuples: a row's fields, joined in name order
        self.frame = "".join(
            s.replace("{", "{{").replace("}", "}}") if isinstance(s, str) else f"{{{s[0]}[{s[1]}]}}"
            for s in self.slots
        )
        trouble = OK
        for _, cell in constant:
            trouble |= cell.trouble
        steps = memo.steps
        if steps.problems is not None and steps.required - self.grid.product_keys:
            trouble |= LOOK  # a required field that no product row sets
        self.trouble = trouble
        billed = [(p.name, c) for p, c in constant if p.is_field and p.name in steps.billed]
        self.state = self.costs.join(0, self.costs.part(billed))
        # A cell worked out per visit needs the row's names bound in its loop and above it.
        deepest = max((lv.axis.level for lv in self.levels if lv.evaluated), default=-1)
        for lv in self.levels:
            lv.wants_values = lv.axis.level <= deepest
            lv.deeper = [inner.axis.index for inner in self.levels[lv.axis.level + 1 :]]

    def distinct(self) -> bool:
        """Whether no two product rows can make one request, seen without the scan: every
        loop's cells read its own axis alone, and its values give distinct fragments. Two
        product rows then differ in the fragment of the first loop they differ in, each
        field's fragment having one place in the key text. (Include rows may repeat any.)"""
        return all(
            lv.static is not None and len({lc[0] for lc in lv.static}) == len(lv.static)
            for lv in self.levels
        )

    # --- the scan -------------------------------------------------------------------------------

    def blocks(self, block: int, looked: bool = False) -> Iterator[Block]:
        """The rows in run order, `block` at a time; `looked`: every row is one to look at
        (an input schema that only a whole body can be checked against)."""
        count = 0
        for out in self._product(block, looked):
            count += len(out.keys)
            if out.stop is not None:
                yield out
                return
            if self.grid.include and len(out.keys) < block:
                break  # the product's last block: include rows go on filling it
            yield out
        else:
            out = Block()
        for j in range(len(self.grid.include)):
            fragments, trouble, state = self.include_row(j)
            trouble |= LOOK if looked else OK
            if trouble & STOP:
                out.stop = self.product_size + j
                break
            if trouble:
                out.looks.append(count)
            out.keys.append(body_key(self.head, fragments))
            out.positions.append(self.product_size + j)
            out.states.append(state)
            count += 1
            if len(out.keys) == block:
                yield out
                out = Block()
        yield out

    def _inner_frame(self, lv: Sequence[tuple[str, ...]], k: int) -> tuple[str, bool]:
        """A %-template of a row for the innermost loop k: the other loops' fragments (lv)
        written in, one %s per field of loop k. The whole key text (True) when the body's
        first field is not loop k's, else the body's fragments."""
        body = "".join(
            s.replace("%", "%%")
            if isinstance(s, str)
            else "%s"
            if s[0] == k
            else lv[s[0]][s[1]].replace("%", "%%")
            for s in self.slots
        )
        for slot in self.slots:  # the first field this row sets: its comma is dropped
            if isinstance(slot, tuple) and slot[0] == k:
                return body, False  # loop k's, and maybe unset: dropped per row (body_key)
            if (slot if isinstance(slot, str) else lv[slot[0]][slot[1]]) != "":
                break
        return key_text(self.head.replace("%", "%%"), body), True

    @staticmethod
    def _frame_of(fmt: Callable[..., str], lv: list[tuple[str, ...]]) -> Callable[[Any], str]:
        """A row's fields from every loop's fragments (lv, the innermost's set per row)."""
        return lambda fragments: fmt(*lv)

    def include_row(self, j: int) -> tuple[str, int, int]:
        """Include row j's key fragments (in name order), trouble and cost state."""
        row = self.grid.include[j]
        values = row.values
        steps = self.memo.steps
        names = sorted(k for k in values if k in steps.fields)
        cells = [(n, steps.field(n, n in row.templated, ())(values, None)) for n in names]
        trouble = OK
        for _, cell in cells:
            trouble |= cell.trouble
        assert row.fixed is not None
        for name, raw in row.fixed.vars.items():
            trouble |= steps.var(name, raw, values, (), name in self.grid.objects).trouble
        if steps.problems is not None and steps.required - set(names):
            trouble |= LOOK
        billed = [(n, c) for n, c in cells if n in steps.billed]
        state = self.costs.join(0, self.costs.part(billed))
        return "".join(c.fragment for _, c in cells), trouble, state

    def _product(self, block: int, looked: bool) -> Iterator[Block]:
        out = Block()
        if not self.grid.has_product:
            yield out
            return
        levels, memo = self.levels, self.memo
        n = len(levels)
        head = self.head
        join = self.costs.join
        x0 = self.exclusion.const if self.exclusion.active else 0
        t0 = self.trouble | (LOOK if looked else OK)
        count, limit = 0, block
        ix = [0] * len(memo.axes)
        row: list[Any] = list(memo.fixed)
        for axis in memo.axes:
            if axis.level >= 0:
                row[axis.index] = None
        lv: list[tuple[str, ...]] = [()] * n
        keys, positions, states, looks = out.keys, out.positions, out.states, out.looks
        fmt = self.frame.format
        if n == 0:
            if not x0:
                if t0 & STOP:
                    out.stop = 0
                    yield out
                    return
                keys.append(body_key(head, fmt()))
                positions.append(0)
                states.append(self.state)
                if t0:
                    looks.append(0)
            yield out
            return
        xs, ts, ss, bases = [x0] * n, [t0] * n, [self.state] * n, [0] * n
        names: list[dict[str, Any] | None] = [dict(memo.base)] + [None] * n
        visits: list[Iterator[tuple[int, LevelCell, dict[str, Any] | None]]] = [iter(())] * n
        k = 0
        if n > 1:
            visits[0] = levels[0].visit(ix, row, names[0])
        while True:
            if k < n - 1:  # the outer loops: one more value of loop k
                item = next(visits[k], None)
                if item is None:
                    if k == 0:
                        break
                    k -= 1
                    continue
                i, lc, names[k + 1] = item
                lv[k] = lc[0]
                xs[k + 1] = xs[k] & lc[2]
                ts[k + 1] = ts[k] | lc[1]
                ss[k + 1] = join(ss[k], lc[3]) if lc[3] else ss[k]
                bases[k + 1] = bases[k] + i * self.weights[levels[k].axis.index]
                k += 1
                if k < n - 1:
                    visits[k] = levels[k].visit(ix, row, names[k])
                continue
            # the innermost loop: one row per value
            level = levels[k]
            xo, to, so, base = xs[k], ts[k], ss[k], bases[k]
            # The other loops' fragments written into a %-template once, for the whole key
            # text when a field of theirs comes first (else the body's fragments).
            whole, text_of = False, self._frame_of(fmt, lv)
            if k == 0 or level.axis.size >= INNER_FRAME_FROM:
                template, whole = self._inner_frame(lv, k)
                text_of = template.__mod__
            inner: Iterable[tuple[int, LevelCell, Any]]
            if level.static is not None and not level.wants_values:
                inner = zip(itertools.count(), level.static, itertools.repeat(None))
            else:
                inner = level.visit(ix, row, names[k])
            for i, lc, _ in inner:
                if xo & lc[2]:
                    continue
                lv[k] = lc[0]
                t = to | lc[1]
                if t:
                    if t & STOP:
                        out.stop = base + i
                        yield out
                        return
                    looks.append(count)
                if whole:
                    keys.append(text_key(text_of(lc[0])))
                else:
                    keys.append(body_key(head, text_of(lc[0])))
                positions.append(base + i)
                states.append(join(so, lc[3]) if lc[3] else so)
                count += 1
                if count == limit:
                    yield out
                    out = Block()
                    keys, positions, states, looks = out.keys, out.positions, out.states, out.looks
                    limit += block
            if k == 0:
                break
            k -= 1
        yield out
