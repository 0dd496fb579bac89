"""The runner's version and its distribution's name, in one place: pyproject.toml, `runner
--version`, runs.jsonl and install hints read them."""

__version__ = "0.1.0"
# What to install (`runner` on PyPI is an unrelated project); pyproject.toml's `name` must match.
DISTRIBUTION = "fal-batch-runner"
