"""`runner report OUT`: reads the journal (and runs.jsonl), writes OUT/report.html, one
self-contained page with the images laid out by the swept axes, and with `png=True` the same
tables as labelled PNG grids (OUT/report.png, or OUT/report-001.png, … one per table); with
`to=DIR`, into DIR instead (a read-only run folder). Every input and output image is checked
against the journal first: one missing or changed since the run is marked, never shown."""

from __future__ import annotations

import contextlib
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ManifestError
from ..folder.integrity import CHANGED, MISSING
from ..folder.journal import FAILED, OK, Record, RunLine, latest, read_runs
from ..folder.names import MANIFEST, REPORT
from ..words import counted
from .files import Files, InputNote
from .layout import Layout, canon, choose_layout, values, vars_of
from .page import CSS, Page, input_name, label

__all__ = ["REPORT", "ReportSummary", "write_report"]

SHOWN_INPUTS = 20  # inputs named in the page's header; each cell marks its own anyway


@dataclass(frozen=True)
class ReportSummary:
    path: Path
    ok: int
    failed: int
    pending: int  # submitting or submitted: the run stopped before their result
    rows: str | None = None  # the axis down each table
    columns: str | None = None  # the axis across (the only axis of a one-row report)
    pages: tuple[str, ...] = ()  # one table per combination of these
    captions: tuple[str, ...] = ()  # axes shown under each image inside its cell
    tables: int = 1
    pngs: tuple[Path, ...] = ()
    missing: int = 0  # output images of ok rows whose file is not in the folder
    changed: int = 0  # output images whose file differs from the journaled size or sha256
    inputs: tuple[InputNote, ...] = ()  # local inputs missing or changed since the run


def write_report(
    out_dir: Path,
    x: str | None = None,
    y: str | None = None,
    png: bool = False,
    to: Path | None = None,
) -> ReportSummary:
    """Write OUT/report.html (and the PNG grids) from the journal's latest state, into `to`
    if given. `x`/`y` name the axes across and down; else the spec's `report:` block as the
    run recorded it; else the two axes with the most values."""
    if not (out_dir / MANIFEST).is_file():
        raise ManifestError(f"no {MANIFEST} in {out_dir}: run `runner run SPEC` first")
    records = list(latest(out_dir).values())
    run = _last_run(out_dir)
    found = run.get("report")
    chosen: dict[str, Any] = found if isinstance(found, dict) else {}
    # The command line wins; the spec's choice fills in the other axis unless it clashes, and
    # is passed over where this run has no such variable (validate checked it against the spec).
    known = {name for r in records for name in vars_of(r)}
    spec_x, spec_y = (n if n in known else None for n in (chosen.get("x"), chosen.get("y")))
    x = x or (spec_x if spec_x != y else None)
    y = y or (spec_y if spec_y != x else None)
    layout = choose_layout(records, x, y)
    statuses = [r.get("status") for r in records]
    ok, failed = statuses.count(OK), statuses.count(FAILED)
    dest = out_dir if to is None else to
    _writable(dest)
    files = Files(out_dir, dest, records)
    files.place_inputs()
    path = dest / REPORT
    pngs: tuple[Path, ...] = ()
    if png:
        from .png import write_pngs

        pngs = tuple(write_pngs(dest, files, layout, _title(out_dir, run, records)))
    summary = ReportSummary(
        path,
        ok,
        failed,
        len(records) - ok - failed,
        layout.rows,
        layout.columns,
        layout.pages,
        layout.captions,
        len(layout.tables),
        pngs,
        files.count(MISSING),
        files.count(CHANGED),
        files.input_notes(),
    )
    page = _page(out_dir, files, records, layout, run, summary)
    tmp = path.with_name(f".{REPORT}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ManifestError(f"cannot write {path}: {exc.strerror or exc}") from None
    return summary


def _writable(dest: Path) -> None:
    """Fail before any work when the report cannot be written there (a read-only archive)."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ManifestError(f"cannot write {dest}: {exc.strerror or exc}") from None
    if not os.access(dest, os.W_OK):
        raise ManifestError(f"cannot write {dest / REPORT}: {dest} is read-only")


def _last_run(out_dir: Path) -> RunLine:
    runs = read_runs(out_dir)
    return runs[-1] if runs else RunLine()


def _title(out_dir: Path, run: RunLine, records: Sequence[Record]) -> str:
    spec = run.get("spec")
    return str(run.get("name") or (PurePosixPath(str(spec)).stem if spec else "") or out_dir.name)


def _fixed_inputs(records: Sequence[Record]) -> dict[str, Any]:
    """Input fields present with the same value in every record."""
    inputs = [r.get("input") or {} for r in records]
    names: dict[str, None] = {}
    for body in inputs:
        names.update(dict.fromkeys(body))
    return {
        n: inputs[0][n]
        for n in names
        if all(n in b for b in inputs) and len({canon(b[n]) for b in inputs}) == 1
    }


def _page(
    out_dir: Path,
    files: Files,
    records: list[Record],
    layout: Layout,
    run: RunLine,
    s: ReportSummary,
) -> str:
    name = _title(out_dir, run, records)
    endpoint = run.get("endpoint") or (records[0].get("endpoint") if records else "")
    meta = [html.escape(str(x)) for x in (endpoint, run.get("backend")) if x]
    if run.get("spec_sha256"):
        meta.append(f"spec sha256 <code>{html.escape(str(run['spec_sha256']))}</code>")
    if run.get("runner_version"):
        meta.append(f"runner {html.escape(str(run['runner_version']))}")
    sizes = " × ".join(f"{html.escape(a)} ({len(values(records, a))})" for a in layout.axes)
    how = [f"{html.escape(a)} {w}" for a, w in ((s.rows, "down"), (s.columns, "across")) if a]
    if layout.pages:
        how.append("one table per " + " × ".join(html.escape(a) for a in layout.pages))
    if layout.captions:
        how.append(" · ".join(html.escape(a) for a in layout.captions) + " under each image")
    images = dict(files.of(records[0]).inputs) if records else {}
    fixed = "".join(
        f"<tr><td>{html.escape(k)}</td>"
        f"<td>{input_name(images[k], files) if k in images else label(v, 100)}</td></tr>"
        for k, v in _fixed_inputs(records).items()
    )
    builder = Page(files, layout)
    body = builder.body(records)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(name)} — report</title><style>{CSS}</style></head><body>"
        f'<header><h1>{html.escape(name)}</h1><p class="meta">{" · ".join(meta)}</p>'
        f'<span class="n ok">{s.ok} ok</span><span class="n failed">{s.failed} failed</span>'
        f'<span class="n pending">{s.pending} pending</span>'
        + (f'<p class="meta">axes: {sizes}</p>' if sizes else "")
        + (
            f'<p class="meta">layout: {"; ".join(how)} (click an image for its inputs)</p>'
            if how
            else ""
        )
        + "".join(f'<p class="warn">{html.escape(line)}</p>' for line in _warnings(s))
        + (f'<table class="fixed"><caption>fixed inputs</caption>{fixed}</table>' if fixed else "")
        + f"</header><main>{body}</main>{builder.overlays()}</body></html>\n"
    )


def _warnings(s: ReportSummary) -> list[str]:
    """What the page does not show as the run made it, in words (the CLI's line says it too)."""
    lines = [
        f"{counted(n, 'output image')} {what}: not shown"
        for n, what in ((s.missing, "missing"), (s.changed, "changed since the run"))
        if n
    ]
    for note in s.inputs[:SHOWN_INPUTS]:
        sent = counted(note.requests, "request")
        then = "what it held then" if note.state == CHANGED else "it"
        lines.append(f"input {note.source} {note.what}: {sent} sent {then}, which is not shown")
    if len(s.inputs) > SHOWN_INPUTS:
        lines.append(f"and {len(s.inputs) - SHOWN_INPUTS} more inputs missing or changed")
    return lines
