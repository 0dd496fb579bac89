"""The command line: `runner init | validate | plan | run | report | export | merge | fields |
schema | serve` (grammar in args.py, the commands in commands.py, the progress bar in
progress.py). Its one entry point is `main`, the console script `runner`."""

from .commands import main

__all__ = ["main"]
