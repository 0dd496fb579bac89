"""runner: a declarative batch runner for fal's image-to-image endpoints."""

__version__ = "0.1.0"
