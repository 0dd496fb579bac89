"""The runner's version, in one place: pyproject.toml, `runner --version` and runs.jsonl read it."""

__version__ = "0.1.0"
