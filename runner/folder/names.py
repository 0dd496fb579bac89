"""The run folder's file names, in one place: every module that reads or writes a run folder
(OUT) or a report's folder names its files from here."""

from __future__ import annotations

MANIFEST = "manifest.jsonl"  # the journal: one JSON line per request event
RUNS = "runs.jsonl"  # one line as each run starts and one as it ends
STATS = "stats.json"  # the running or last run's counters, rewritten whole
IMAGES = "images"  # IMAGES/<first two hex digits of the key>/<key>-<i>.<ext>: outputs
INPUTS = "inputs"  # INPUTS/<sha256>.<ext>: inline (data: URI) inputs, each kept once
LOCK_FILE = ".runner.lock"  # held while a run or a merge writes the folder
REPORT = "report.html"  # `runner report`'s page, in OUT or in --to's folder
REPORT_INPUTS = "report-inputs"  # beside the report: copies of the input images it shows
