"""Which axes each cell reads, measured, and its results memoized: the matrix axes and the
cells (body fields and variables) of a grid in, a Memo that gives any cell's result for a row.

A cell is first evaluated with no axis bound but the one that sets it; reading a name that an
unbound axis sets raises NeedAxis, that axis joins the cell's dependencies, and the table is
started again: what rendering actually read decides. The table, one result per combination of
the axes a cell depends on (a constant for none, a list per value for one), is built while it
stays within TABLE_BUDGET; a cell past it, or one that reads an axis too long to hold, is
evaluated per visit instead (scan.py), at the depth of the deepest axis it reads.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import GridError
from .cells import Cell, NeedAxis, Probe, Steps
from .rowgrid import RowGrid
from .sources import Source
from .templates import TemplateError

HELD = 100_000  # an axis with more values than this is streamed from its file, never held
TABLE_BUDGET = 65_536  # results memoized per cell; past it a cell is worked out per visit


class Axis:
    """One matrix axis: its values (held in a list, or streamed from its file when too long),
    and how a value sets the row's names. `level` is its depth in the scan's loops, -1 for an
    axis of one value (a constant)."""

    def __init__(self, index: int, name: str, source: Source, defaults: Mapping[str, Any]):
        self.index, self.name, self.source = index, name, source
        self.fields = source.fields  # an object axis's fields; None for plain values
        self.size = len(source)
        self.held: list[Any] | None = list(source) if self.size <= HELD else None
        self.level = -1
        # An empty csv cell leaves the default in place: binding a row restores them first.
        self.fallback = {f: defaults[f] for f in self.fields or () if f in defaults}

    def names(self) -> tuple[str, ...]:
        return (self.name,) if self.fields is None else tuple(self.fields)

    def bind(self, values: dict[str, Any], value: Any) -> None:
        """Set the row names that `value` of this axis sets (over another value's: a field
        an empty csv cell leaves unset goes back to its default, or out)."""
        if self.fields is None:
            values[self.name] = value
            return
        if len(value) < len(self.fields):
            for name in self.fields:
                if name not in value:
                    if name in self.fallback:
                        values[name] = self.fallback[name]
                    else:
                        values.pop(name, None)
        values.update(value)

    def values(self) -> Iterator[Any]:
        """The axis's values; a streamed one read from its file again (which may raise
        OSError, UnicodeDecodeError or csv.Error: see unreadable)."""
        return iter(self.held) if self.held is not None else iter(self.source)

    def unreadable(self, error: Exception) -> GridError:
        """A streamed axis's file that can no longer be read, as a GridError (a run re-reads
        it: one removed or spoilt since validation stops the run)."""
        return GridError(f"cannot read {self.name!r} any more: {error}", self.source.path)


READ_ERRORS = (OSError, UnicodeDecodeError, csv.Error)


@dataclass(eq=False)
class Recipe:
    """How one cell is had: `compute(values, row)` works it out for a row (`row`: the bound
    value per axis index, None where unbound); `deps` are the axes it reads, `table` its
    results per combination of them (mixed radix, the last axis fastest), None when it is
    worked out per visit."""

    name: str
    compute: Callable[[Mapping[str, Any], Sequence[Any]], Cell]
    is_field: bool
    deps: tuple[int, ...] = ()
    table: list[Cell] | None = None
    strides: tuple[int, ...] = ()
    level: int = -1  # the scan depth at which every axis it reads is bound (-1: a constant)
    # Whether the scan must look at it: an object axis's row whose fields are all request
    # fields renders only what their cells render (and fail on) already.
    scanned: bool = True

    def index(self, ix: Sequence[int]) -> int:
        """The table index of the row whose value index per axis is `ix`."""
        return sum(ix[a] * s for a, s in zip(self.deps, self.strides, strict=True))


class Misplaced(Exception):
    """A cell worked out per visit read a name of `axis`, which its loop does not bind: it
    must be placed deeper (Memo.deepen) and the scan started again."""

    def __init__(self, recipe: Recipe, axis: int) -> None:
        super().__init__(recipe.name, axis)
        self.recipe, self.axis = recipe, axis


class Memo:
    """The cells of one grid's product rows, each with its measured dependencies and table."""

    def __init__(self, grid: RowGrid, steps: Steps) -> None:
        self.grid, self.steps = grid, steps
        self.axes = [Axis(i, n, s, grid.defaults) for i, (n, s) in enumerate(grid.axes)]
        depth = 0
        for axis in self.axes:
            if axis.size > 1:
                axis.level, depth = depth, depth + 1
        # name -> the axis that sets it, for axes of more than one value
        self.owner = {n: a.index for a in self.axes if a.level >= 0 for n in a.names()}
        # The row with every varying axis unbound: defaults, and the one-value axes' names.
        self.base = {k: v for k, v in grid.defaults.items() if k not in self.owner}
        self.fixed: list[Any] = [None] * len(self.axes)  # each one-value axis's value
        for axis in self.axes:
            if axis.level < 0:
                self.fixed[axis.index] = next(axis.values())
                axis.bind(self.base, self.fixed[axis.index])
        self.recipes = self._recipes()

    # --- the cells ------------------------------------------------------------------------------

    def _recipes(self) -> list[Recipe]:
        """A recipe per body field (in name order), then per variable of the rows' vars: the
        defaults' variables, the plain axes that set no field, and each object axis's row."""
        grid = self.grid
        recipes = [
            Recipe(name, self._field(name), True)
            for name in sorted(grid.product_keys & grid.fields.keys())
        ]
        names = [*grid.product_def_vars]
        names += [a.name for a in self.axes if a.fields is None and a.name not in grid.fields]
        recipes += [Recipe(name, self._var(name, None), False) for name in names]
        fields = grid.fields.keys()
        recipes += [
            Recipe(a.name, self._var(a.name, a.index), False, scanned=not set(a.fields) <= fields)
            for a in self.axes
            if a.fields is not None
        ]
        for recipe in recipes:
            self._measure(recipe)
        return recipes

    def _field(self, name: str) -> Callable[[Mapping[str, Any], Sequence[Any]], Cell]:
        return self.steps.field(name, name in self.grid.templated, self.grid.literal)

    def _var(
        self, name: str, paired: int | None
    ) -> Callable[[Mapping[str, Any], Sequence[Any]], Cell]:
        """A variable named in the row, or (`paired`: that axis's index) an object axis's row."""
        steps, literal = self.steps, self.grid.literal

        def compute(values: Mapping[str, Any], row: Sequence[Any]) -> Cell:
            if paired is None:
                return steps.var(name, values[name], values, literal, False)
            return steps.var(name, self._at(row, paired), values, literal, True)

        return compute

    def _at(self, row: Sequence[Any], axis: int) -> Any:
        value = row[axis] if self.axes[axis].level >= 0 else self.fixed[axis]
        if value is None:
            raise NeedAxis(axis)
        return value

    def first_deps(self, recipe: Recipe) -> set[int]:
        """The axis that sets the cell's own name, if one does: it is surely read."""
        axis = self.owner.get(recipe.name)
        if axis is None and not recipe.is_field:
            found = [a.index for a in self.axes if a.name == recipe.name and a.level >= 0]
            axis = found[0] if found else None
        return {axis} if axis is not None else set()

    def _measure(self, recipe: Recipe) -> None:
        """Find the axes the cell reads and build its table, within the budget."""
        deps = self.first_deps(recipe)
        while True:
            recipe.deps = tuple(sorted(deps))
            recipe.level = max((self.axes[a].level for a in deps), default=-1)
            size = math.prod(self.axes[a].size for a in deps)
            if size > TABLE_BUDGET or any(self.axes[a].held is None for a in deps):
                recipe.table = None  # worked out per visit (scan.py)
                return
            try:
                recipe.table = self._table(recipe)
            except NeedAxis as need:
                deps.add(need.axis)
                continue
            strides, stride = [], 1
            for a in reversed(recipe.deps):
                strides.append(stride)
                stride *= self.axes[a].size
            recipe.strides = tuple(reversed(strides))
            return

    def _table(self, recipe: Recipe) -> list[Cell]:
        axes = [self.axes[a] for a in recipe.deps]
        row: list[Any] = [None] * len(self.axes)
        table = []
        for combo in itertools.product(*(a.held or () for a in axes)):
            values = dict(self.base)
            for axis, value in zip(axes, combo, strict=True):
                axis.bind(values, value)
                row[axis.index] = value
            table.append(self.evaluate(recipe, values, row))
        return table

    def evaluate(self, recipe: Recipe, values: dict[str, Any], row: Sequence[Any]) -> Cell:
        """The cell's result for a row whose unbound axes (None in `row`) are left out of
        `values`. A template error there may come of an unbound name: the same step again
        through a Probe then raises NeedAxis, or confirms the error."""
        cell = recipe.compute(values, row)
        if isinstance(cell.value, TemplateError):
            bound = {i for i, v in enumerate(row) if v is not None}
            recipe.compute(Probe(values, self.owner, bound), row)
        return cell

    def evaluate_here(self, recipe: Recipe, values: Any, row: Sequence[Any]) -> Cell:
        """evaluate, for a cell placed in a loop: a name of an axis that the loop does not
        bind makes it Misplaced."""
        try:
            return self.evaluate(recipe, values, row)
        except NeedAxis as need:
            raise Misplaced(recipe, need.axis) from None

    def cell(self, recipe: Recipe, ix: Sequence[int], values: Any, row: Sequence[Any]) -> Cell:
        """The cell's result for the row whose value index per axis is `ix` (its table's
        entry, or worked out from `values` and `row` as in evaluate)."""
        if recipe.table is not None:
            return recipe.table[recipe.index(ix)]
        return self.evaluate_here(recipe, values, row)

    def deepen(self, recipe: Recipe, axis: int) -> None:
        """A cell worked out per visit read a name of `axis`, deeper than it was placed."""
        recipe.deps = tuple(sorted({*recipe.deps, axis}))
        recipe.level = max(self.axes[a].level for a in recipe.deps)
