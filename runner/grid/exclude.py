"""`exclude` as bit masks: the exclude entries and the grid's axes in, per axis value a mask of
the entries whose keys on that axis the value matches (raw values, before templates). A
product row is dropped when the AND of its values' masks (and the constants') is not zero, so
a row's exclusion is one AND per axis; an entry matches some row when every axis has a value
with its bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .cells import ABSENT
from .memo import Axis, Memo
from .rowgrid import RowGrid


def same(have: Any, want: Any) -> bool:
    """An exclude value matches a row's value; YAML's true is not 1: booleans match only
    booleans."""
    if isinstance(have, bool) or isinstance(want, bool):
        return have is want
    return bool(have == want)


class Exclusion:
    """The masks of one grid's exclude entries (bit j: the entry grid.exclude[j])."""

    def __init__(self, grid: RowGrid, memo: Memo) -> None:
        self.active = bool(grid.exclude)
        self._axes = memo.axes
        # per entry and varying axis, the entry's (key, wanted value) that the axis decides
        self._checks: list[dict[int, list[tuple[str, Any]]]] = []
        self.const = 0
        for bit, (_, entry) in enumerate(grid.exclude):
            checks: dict[int, list[tuple[str, Any]]] = {}
            fits = True
            for key, want in entry:
                axis = self._decider(key, memo)
                if axis is None:  # a default's value, or an axis of one value
                    fits = fits and same(self._constant(key, memo), want)
                else:
                    checks.setdefault(axis, []).append((key, want))
            self._checks.append(checks)
            self.const |= fits << bit
        self.all = (1 << len(grid.exclude)) - 1
        self.held: list[list[int] | None] = [
            [self.mask(a, v) for v in a.held] if self.active and a.held is not None else None
            for a in memo.axes
        ]

    @staticmethod
    def _decider(key: str, memo: Memo) -> int | None:
        if key in memo.owner:
            return memo.owner[key]
        for axis in memo.axes:  # an object axis's name stands for its whole mapping
            if axis.name == key and axis.level >= 0:
                return axis.index
        return None

    @staticmethod
    def _constant(key: str, memo: Memo) -> Any:
        if key in memo.base:
            return memo.base[key]
        for axis in memo.axes:
            if axis.name == key:
                return memo.fixed[axis.index]
        return ABSENT

    def mask(self, axis: Axis, value: Any) -> int:
        """The entries that `value` of `axis` lets match (those that do not name the axis too)."""
        if not self.active:
            return 0
        found = 0
        for bit, checks in enumerate(self._checks):
            if all(same(_have(axis, value, key), want) for key, want in checks.get(axis.index, ())):
                found |= 1 << bit
        return found

    def at(self, axis: Axis, index: int, value: Any) -> int:
        masks = self.held[axis.index]
        return masks[index] if masks is not None else self.mask(axis, value)

    def matched(self) -> list[bool]:
        """Per entry, whether some product row matches it (an entry that matches none is a
        warning). Reads a streamed axis's file once more."""
        seen = self.const
        for axis in self._axes:
            if axis.level < 0 or not self.active:
                continue
            masks = self.held[axis.index]
            union = 0
            for m in masks if masks is not None else (self.mask(axis, v) for v in axis.values()):
                union |= m
                if union == self.all:
                    break
            seen &= union
        return [bool(seen >> bit & 1) for bit in range(len(self._checks))]


def _have(axis: Axis, value: Any, key: str) -> Any:
    if axis.fields is None or key == axis.name:
        return value
    return value.get(key, axis.fallback.get(key, ABSENT)) if isinstance(value, Mapping) else ABSENT


__all__: Sequence[str] = ["Exclusion", "same"]
