"""`runner merge OUT1 OUT2 … --out DIR`: several run folders (shards of one job, say) in, one
run folder out that `report`, `export` and a further `run` (resume) accept: one journal line
per key, the images it names (hardlinked where possible), and every source's runs.jsonl lines.

Which record of a key wins: ok over failed over pending; between equals, the first folder given.
Two ok records of one key are a conflict: the first is kept and the others are counted."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .attachments import INPUTS
from .errors import ManifestError, UsageError
from .export.files import link_or_copy
from .folderlock import LOCK_FILE, locked
from .manifest import (
    FAILED,
    MANIFEST,
    OK,
    RUNS,
    Journal,
    Record,
    RunLine,
    latest,
    read_runs,
    utc_now,
)

_RANK = {OK: 0, FAILED: 1}  # anything else (submitting, submitted) is pending: rank 2


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


def merge(sources: Sequence[Path], out: Path) -> MergeSummary:
    """Write the merge of `sources` into `out` (a new or empty folder)."""
    _check(sources, out)
    chosen: dict[str, tuple[Record, Path]] = {}
    conflicts: list[str] = []
    replaced = 0
    origins: dict[tuple[Any, Any], Path] = {}  # (backend, fal server) -> first folder with it
    for source in sources:
        for key, record in latest(source).items():
            origins.setdefault((record.get("backend"), record.get("server")), source)
            held = chosen.get(key)
            if held is None:
                chosen[key] = (record, source)
            elif _rank(record) < _rank(held[0]):
                chosen[key] = (record, source)
                replaced += 1
            elif _rank(record) == _rank(held[0]) == 0:
                conflicts.append(key)
    _one_backend(origins)
    images = 0
    with locked(out, "runner merge"):  # a run started on DIR meanwhile must not interleave
        journal = Journal(out)
        try:
            for record, source in chosen.values():
                for output in record.get("outputs") or [] if record.get("status") == OK else []:
                    images += _place(source, out, str(output.get("file") or ""))
                journal.append(dict(record))  # type: ignore[arg-type]
        finally:
            journal.close()
        for source in sources:  # inline (data: URI) inputs the runs kept, each once by content
            for kept in sorted((source / INPUTS).glob("*")) if (source / INPUTS).is_dir() else []:
                if kept.is_file() and not kept.name.startswith("."):
                    _place(source, out, f"{INPUTS}/{kept.name}")
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
    )
    _write_runs(sources, summary)
    return summary


def _check(sources: Sequence[Path], out: Path) -> None:
    if not sources:
        raise UsageError("merge needs at least one run folder")
    for source in sources:
        if not (source / MANIFEST).is_file():
            raise UsageError(f"no {MANIFEST} in {source}: not a run folder")
        if source.resolve() == out.resolve():
            raise UsageError(f"--out {out} is one of the folders to merge")
    if out.exists() and (not out.is_dir() or any(p.name != LOCK_FILE for p in out.iterdir())):
        raise UsageError(f"--out {out} exists and is not an empty folder; name a new folder")


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


def _write_runs(sources: Sequence[Path], summary: MergeSummary) -> None:
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
    path = summary.out / RUNS
    try:
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot write {path}: {exc.strerror or exc}") from None
