"""An offline, fal-compatible service for tests and demos: a queue app and a run app on
loopback, a deterministic CPU image-to-image model, and seeded fault injection."""

from ..emulatorsettings import EmulatorSettings, Faults
from .server import Emulator, serve_forever, served_line
from .stats import Stats

__all__ = [
    "Emulator",
    "EmulatorSettings",
    "Faults",
    "Stats",
    "serve_forever",
    "served_line",
]
