"""The rows of a grid in run order, as keys: a Memo and the exclude masks in, Blocks out, each
row with its 64-bit key, its position, its cost state and whether the validation walk must
look at it: product rows (first axis slowest) minus exclude, then include rows.

The product is nested loops, one per axis of more than one value. Each loop, at each of its
values, fixes the cells placed at its depth (a table lookup, or worked out then) as one
LevelCell: their key fragments, trouble, exclude mask and billed facts. A row is then a few
lookups, one str.format of the fragments in name order, and one sha256.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .cells import ABSENT, LOOK, OK, STOP, Cell
from .exclude import Exclusion
from .keys import body_key, key_head
from .memo import Axis, Memo, Recipe
from .plan import Cost, Pricing
from .rowgrid import RowGrid

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


class Costs:
    """What each row costs, interned: a row's billed facts (and whether it has a URL input)
    are joined one axis value's part at a time into a small state number; state_cost gives
    its Cost once per distinct state."""

    def __init__(self, pricing: Pricing) -> None:
        self._pricing = pricing
        self._parts: dict[tuple[tuple[tuple[str, Any], ...], bool], int] = {((), False): 0}
        self._part_list: list[tuple[tuple[tuple[str, Any], ...], bool]] = [((), False)]
        self._states = dict(self._parts)  # the same numbering: part 0 is the empty state
        self._state_list = list(self._part_list)
        self._joined: dict[tuple[int, int], int] = {}
        self._costs: dict[int, tuple[Cost, bool]] = {}

    def part(self, cells: Sequence[tuple[str, Cell]]) -> int:
        """The number of the part that these (field, cell) give to a row."""
        facts = tuple(sorted((n, c.fact) for n, c in cells if c.value is not ABSENT))
        key = (facts, any(c.remote for _, c in cells))
        found = self._parts.get(key)
        if found is None:
            found = self._parts[key] = len(self._part_list)
            self._part_list.append(key)
        return found

    def join(self, state: int, part: int) -> int:
        """The state of a row that adds `part` to `state`."""
        found = self._joined.get((state, part))
        if found is None:
            facts, remote = self._state_list[state]
            more, far = self._part_list[part]
            key = (tuple(sorted(facts + more)), remote or far)
            found = self._states.get(key)
            if found is None:
                found = self._states[key] = len(self._state_list)
                self._state_list.append(key)
            self._joined[(state, part)] = found
        return found

    def of(self, state: int) -> tuple[Cost, bool]:
        """(the Cost, whether it has an input given as an http(s) URL) of a row's state."""
        found = self._costs.get(state)
        if found is None:
            facts, remote = self._state_list[state]
            found = self._costs[state] = (self._pricing.cost(facts), remote)
        return found


class Level:
    """One loop of the product: an axis of more than one value and the cells placed there."""

    def __init__(
        self, axis: Axis, recipes: list[Recipe], memo: Memo, exclusion: Exclusion, costs: Costs
    ) -> None:
        self.axis = axis
        self.recipes = recipes  # fields first, in name order (Memo's order), then variables
        self.fields = [p for p in recipes if p.is_field]
        billed = memo.steps.billed
        self._billed = [i for i, p in enumerate(recipes) if p.is_field and p.name in billed]
        self._memo, self._exclusion, self._costs = memo, exclusion, costs
        self.evaluated = any(p.table is None for p in recipes)
        # The same LevelCells for every visit when each cell here reads this axis alone.
        self.static: list[LevelCell] | None = None
        if axis.held is not None and all(p.deps == (axis.index,) and p.table for p in recipes):
            assert axis.held is not None
            self.static = [
                self.combine([p.table[i] for p in recipes if p.table], exclusion.at(axis, i, v))
                for i, v in enumerate(axis.held)
            ]

    def combine(self, cells: Sequence[Cell], mask: int) -> LevelCell:
        trouble = OK
        for cell in cells:
            trouble |= cell.trouble
        fragments = tuple(cell.fragment for cell in cells[: len(self.fields)])
        part = self._costs.part([(self.recipes[i].name, cells[i]) for i in self._billed])
        return fragments, trouble, mask, part

    def cells(
        self, index: int, value: Any, ix: Sequence[int], values: Any, row: Sequence[Any]
    ) -> LevelCell:
        """The LevelCell of this axis's value `index` in the row bound so far."""
        if self.static is not None:
            return self.static[index]
        cells = [self._memo.cell(p, ix, values, row) for p in self.recipes]
        return self.combine(cells, self._exclusion.at(self.axis, index, value))


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
        # Cells every row shares: their fragments go into the frame, the rest into constants.
        pieces: list[str] = []
        constant: list[tuple[Recipe, Cell]] = []
        for recipe in memo.recipes:
            if recipe.level < 0:
                assert recipe.table is not None
                constant.append((recipe, recipe.table[0]))
        const = {id(p): c for p, c in constant}
        for recipe in memo.recipes:
            if not recipe.is_field:
                continue
            if recipe.level < 0:
                text = const[id(recipe)].fragment
                pieces.append(text.replace("{", "{{").replace("}", "}}"))
            else:
                slot = self.levels[recipe.level].fields.index(recipe)
                pieces.append(f"{{{recipe.level}[{slot}]}}")
        self.frame = "".join(pieces)
        trouble = OK
        for _, cell in constant:
            trouble |= cell.trouble
        steps = memo.steps
        if steps.problems is not None and steps.required - self.grid.product_keys:
            trouble |= LOOK  # a required field that no product row sets
        self.trouble = trouble
        billed = [(p.name, c) for p, c in constant if p.is_field and p.name in steps.billed]
        self.state = self.costs.join(0, self.costs.part(billed))
        # a deeper loop's cells worked out per visit need the row's names bound above them
        deepest = max((lv.axis.level for lv in self.levels if lv.evaluated), default=-1)
        self.wants_values = [lv.axis.level <= deepest for lv in self.levels]

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

    def include_row(self, j: int) -> tuple[str, int, int]:
        """Include row j's key fragments (in name order), trouble and cost state."""
        row = self.grid.include[j]
        values = row.values
        steps = self.memo.steps
        names = sorted(k for k in values if k in steps.fields)
        cells = [(n, steps.field(n, values, n in row.templated, ())) for n in names]
        trouble = OK
        for _, cell in cells:
            trouble |= cell.trouble
        assert row.fixed is not None
        for name, raw in row.fixed[0].items():
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
        head, fmt = self.head, self.frame.format
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
        values: list[Any] = [dict(memo.base)] + [None] * n
        its: list[Iterator[tuple[int, Any]]] = [iter(())] * n
        k = 0
        if n > 1:
            its[0] = self._values(0, ix, row)
        while True:
            if k < n - 1:
                level = levels[k]
                item = next(its[k], None)
                if item is None:
                    if k == 0:
                        break
                    k -= 1
                    continue
                i, value = item
                if self.wants_values[k]:
                    values[k + 1] = bound = dict(values[k])
                    level.axis.bind(bound, value)
                lc = level.cells(i, value, ix, values[k + 1], row)
                lv[k] = lc[0]
                xs[k + 1] = xs[k] & lc[2]
                ts[k + 1] = ts[k] | lc[1]
                ss[k + 1] = join(ss[k], lc[3]) if lc[3] else ss[k]
                bases[k + 1] = bases[k] + i * self.weights[level.axis.index]
                k += 1
                if k < n - 1:
                    its[k] = self._values(k, ix, row)
                continue
            # the innermost loop: one row per value
            level = levels[k]
            xo, to, so, base = xs[k], ts[k], ss[k], bases[k]
            inner: Iterator[tuple[int, LevelCell]]
            if level.static is not None and not level.evaluated:
                inner = enumerate(level.static)
            else:
                inner = self._inner(k, ix, row, values[k])
            for i, lc in inner:
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
                keys.append(body_key(head, fmt(*lv)))
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

    def _values(self, k: int, ix: list[int], row: list[Any]) -> Iterator[tuple[int, Any]]:
        """Level k's (value index, value), with ix and row kept up to date (and the axes
        deeper than it unbound, so a cell worked out here cannot read them)."""
        axis = self.levels[k].axis
        a = axis.index
        deeper = [lv.axis.index for lv in self.levels[k + 1 :]]
        for i, value in enumerate(axis.values()):
            ix[a] = i
            row[a] = value
            for b in deeper:
                row[b] = None
            yield i, value

    def _inner(
        self, k: int, ix: list[int], row: list[Any], above: Any
    ) -> Iterator[tuple[int, LevelCell]]:
        level = self.levels[k]
        axis = level.axis
        for i, value in self._values(k, ix, row):
            bound = None
            if level.evaluated:
                bound = dict(above)
                axis.bind(bound, value)
            yield i, level.cells(i, value, ix, bound, row)
