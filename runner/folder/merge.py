"""`runner merge OUT1 OUT2 … --out DIR`: several run folders (shards of one job, say) in, one
run folder out that `report`, `export` and a further `run` (resume) accept: one journal line
per key, the images it names (hardlinked where possible), and every source's runs.jsonl lines.

Which record of a key wins: ok over failed over pending; between equals, the first folder given.
Two ok records of one key are a conflict: the first is kept and the others are counted.

Nothing is paid twice and nothing looks complete before it is: each source is read under its
folder's lock (shared with other merges; a live run's folder is refused, and no run starts on a
source mid-merge), DIR's lock is held throughout, and DIR is built as a hidden sibling renamed
onto DIR when complete (staging.py), so a killed merge leaves no half a run folder."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ManifestError, UsageError
from .journal import FAILED, OK, Journal, Record, RunLine, latest, never_reached, read_runs, utc_now
from .lock import MERGE, hand_over, locked, reading
from .names import INPUTS, LOCK_FILE, MANIFEST, RUNS
from .staging import check_replaceable, link_or_copy, real, staged

_RANK = {OK: 0, FAILED: 1}  # anything else (submitting, submitted) is pending: rank 2


@dataclass(frozen=True)
class SpecUse:
    """One spec (by its sha256) that made rows in the sources, and the folders it made."""

    spec: str  # its path as a runs.jsonl line recorded it
    sha256: str
    folders: tuple[Path, ...]


@dataclass(frozen=True)
class MergeSummary:
    out: Path
    sources: tuple[Path, ...]
    ok: int
    failed: int
    pending: int
    images: int  # image files placed in DIR
    conflicts: tuple[str, ...]  # keys that were ok in more than one folder (the first kept)
    replaced: int  # keys whose failed or pending record gave way to a better one
    specs: tuple[SpecUse, ...] = ()  # the specs the sources' runs.jsonl name, in order
    # sources whose last run stopped early (killed, Ctrl-C, a cap...): the rows it did not
    # reach are in no journal, so only a run can finish them
    unfinished: tuple[Path, ...] = ()


def merge(sources: Sequence[Path], out: Path) -> MergeSummary:
    """Write the merge of `sources` into `out` (a new or empty folder)."""
    _check(sources, out)
    made = not out.exists()
    with contextlib.ExitStack() as held:
        for source in sources:
            held.enter_context(reading(source, MERGE, "wait for it to finish, then merge it"))
        chosen, conflicts, replaced, origins = _choose(sources)
        _one_backend(origins)
        held.enter_context(locked(out, MERGE, "name another --out"))
        ours = _inode(out / LOCK_FILE)
        try:
            _check_out(out)  # again, under the lock
            with staged(out, folder=True, shown=out) as partial:
                images = _write(chosen, sources, partial)
                statuses = [r.get("status") for r, _ in chosen.values()]
                ok, failed = statuses.count(OK), statuses.count(FAILED)
                summary = MergeSummary(
                    out,
                    tuple(sources),
                    ok,
                    failed,
                    len(statuses) - ok - failed,
                    images,
                    tuple(dict.fromkeys(conflicts)),
                    replaced,
                    _specs(sources),
                    tuple(s for s in sources if _stopped_early(read_runs(s))),
                )
                _write_runs(sources, summary, partial)
                # a run that takes DIR's lock now is refused until the rename, and after it
                hand_over(real(out), partial)
        except BaseException:
            if made:
                _unmake(out, ours)
            raise
    return summary


def _choose(
    sources: Sequence[Path],
) -> tuple[dict[str, tuple[Record, Path]], list[str], int, dict[tuple[Any, Any], Path]]:
    chosen: dict[str, tuple[Record, Path]] = {}
    conflicts: list[str] = []
    replaced = 0
    origins: dict[tuple[Any, Any], Path] = {}  # (backend, fal server) -> first folder with it
    for source in sources:
        for key, record in latest(source).items():
            status, attempts = record.get("status"), record.get("attempts")
            if not never_reached(status, attempts, record.get("possible_duplicates")):
                origins.setdefault((record.get("backend"), record.get("server")), source)
            held = chosen.get(key)
            if held is None:
                chosen[key] = (record, source)
            elif _rank(record) < _rank(held[0]):
                chosen[key] = (record, source)
                replaced += 1
            elif _rank(record) == _rank(held[0]) == 0:
                conflicts.append(key)
    return chosen, conflicts, replaced, origins


def _write(chosen: dict[str, tuple[Record, Path]], sources: Sequence[Path], into: Path) -> int:
    """The journal, the images it names and the kept inline inputs, into `into`; the number
    of images placed."""
    images = 0
    journal = Journal(into)
    try:
        for record, source in chosen.values():
            for output in record.get("outputs") or [] if record.get("status") == OK else []:
                images += _place(source, into, str(output.get("file") or ""))
            journal.append(dict(record))  # type: ignore[arg-type]
    finally:
        journal.close()
    for source in sources:  # inline (data: URI) inputs the runs kept, each once by content
        for kept in sorted((source / INPUTS).glob("*")) if (source / INPUTS).is_dir() else []:
            if kept.is_file() and not kept.name.startswith("."):
                _place(source, into, f"{INPUTS}/{kept.name}")
    return images


def _check(sources: Sequence[Path], out: Path) -> None:
    if not sources:
        raise UsageError("merge needs at least one run folder")
    seen: dict[tuple[int, int], Path] = {}
    target = real(out)
    for source in sources:
        if not (source / MANIFEST).is_file():
            raise UsageError(f"no {MANIFEST} in {source}: not a run folder")
        where = real(source)
        if target == where:
            raise UsageError(f"--out {out} is one of the folders to merge; name a new folder")
        if target.is_relative_to(where):
            raise UsageError(f"--out {out} is inside {source}, a folder to merge; name one outside")
        if where.is_relative_to(target):
            raise UsageError(f"{source}, a folder to merge, is inside --out {out}")
        info = os.stat(where)
        first = seen.setdefault((info.st_dev, info.st_ino), source)
        if first is not source:
            raise UsageError(
                f"{first} and {source} are the same folder ({where}); name each folder once"
            )
    _check_out(out)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a new folder")
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise UsageError(f"--out {out} exists and is not an empty folder; name a new folder")
    check_replaceable(out, out)


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _unmake(out: Path, lock: tuple[int, int] | None) -> None:
    """Take back the folder this merge made for its lock, if it holds nothing but that lock
    file (a lock file some other process made there is left alone)."""
    with contextlib.suppress(OSError):
        names = {p.name for p in out.iterdir()}
        if names == {LOCK_FILE} and lock is not None and _inode(out / LOCK_FILE) == lock:
            (out / LOCK_FILE).unlink()
        out.rmdir()  # only if empty


def _specs(sources: Sequence[Path]) -> tuple[SpecUse, ...]:
    """Which specs made the sources' rows, by the sha256 their runs.jsonl lines record (two
    copies of one spec on two machines are one spec; an edit is another)."""
    found: dict[str, tuple[str, list[Path]]] = {}
    for source in sources:
        for line in read_runs(source):
            digest, path = line.get("spec_sha256"), line.get("spec")
            if not isinstance(digest, str) or not digest:
                continue
            spec, folders = found.setdefault(digest, (str(path or "?"), []))
            if source not in folders:
                folders.append(source)
    return tuple(SpecUse(spec, d, tuple(f)) for d, (spec, f) in found.items())


def _stopped_early(lines: Sequence[RunLine]) -> bool:
    """Whether a folder's last run stopped before its last row: no `end` line (killed, or a
    crash), or one that says it was interrupted or why it stopped sending."""
    runs = [line for line in lines if line.get("event") in ("start", "end")]
    if not runs:
        return False
    last = runs[-1]
    return last.get("event") == "start" or bool(last.get("interrupted") or last.get("stop_reason"))


def _one_backend(origins: dict[tuple[Any, Any], Path]) -> None:
    """Refuse to mix backends (or fal servers): a row counts as done only for the backend that
    made it, so a mixed folder is one no run accepts, and its export would pass the emulator's
    pictures off as fal's."""
    known = [(b, s, p) for (b, s), p in origins.items() if b is not None]
    for i, (backend_a, server_a, path_a) in enumerate(known):
        for backend_b, server_b, path_b in known[i + 1 :]:
            if backend_a == backend_b and None in (server_a, server_b):
                continue  # a server not recorded (older journals): trusted, as `run` does
            if (backend_a, server_a) != (backend_b, server_b):
                raise UsageError(
                    f"{path_a} holds rows made by {_label(backend_a, server_a)} and {path_b} "
                    f"rows made by {_label(backend_b, server_b)}: merge only folders of one "
                    "backend (another backend's results never count as this one's)"
                )


def _label(backend: Any, server: Any) -> str:
    return f"backend {backend}" + (f" at {server}" if server else "")


def _rank(record: Record) -> int:
    return _RANK.get(str(record.get("status")), 2)


def _place(source: Path, out: Path, rel: str) -> int:
    """Link or copy one image named by a journal line (a plain relative path inside the
    folder, so a merged line points at the same place); 0 if the source file is gone."""
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or ":" in rel or "\\" in rel or ".." in parts:
        return 0
    src, dst = source / rel, out / rel
    if not src.is_file():
        return 0
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            link_or_copy(src, dst)
    except OSError as exc:
        raise ManifestError(f"cannot write {dst}: {exc.strerror or exc}") from None
    return 1


def _write_runs(sources: Sequence[Path], summary: MergeSummary, into: Path) -> None:
    """The sources' run lines (specs, names, shards), then one line for the merge itself."""
    lines: list[str] = []
    last = RunLine()
    for source in sources:
        for found in read_runs(source):
            lines.append(json.dumps(found, ensure_ascii=False, separators=(",", ":")))
            last = found
    keep = ("name", "spec", "spec_sha256", "endpoint", "backend", "runner_version", "report")
    merged = {
        **{k: v for k, v in last.items() if k in keep},
        "event": "merge",
        "time": utc_now(),
        "sources": [str(s) for s in summary.sources],
        "ok": summary.ok,
        "failed": summary.failed,
        "pending": summary.pending,
        "conflicts": len(summary.conflicts),
    }
    lines.append(json.dumps(merged, ensure_ascii=False, separators=(",", ":")))
    path = into / RUNS
    try:
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot write {path}: {exc.strerror or exc}") from None
