"""The run folder: its file names, the journal (manifest.jsonl, runs.jsonl), stats.json, the
folder's lock, whole-or-nothing staging, the integrity of what the journal recorded, merge."""
