"""Placing exported image files: hardlinks where the file system allows (else copies), in
numbered sub-folders so that no folder holds more than FOLDER_FILES files (the Hub's limit)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ManifestError
from ..folder.staging import link_or_copy
from .rows import ImageRef

FOLDER_FILES = 5_000  # the Hub wants under 10,000 files per folder


class Placer:
    """Puts each image once under `root/<kind>/<NNNNN>/<name>.<ext>`; remembers where."""

    def __init__(self, root: Path, kind: str, folder_files: int = FOLDER_FILES) -> None:
        self._root = root
        self._kind = kind
        self._per_folder = folder_files
        self._placed: dict[str, str] = {}  # name -> path relative to root

    def place(self, image: ImageRef) -> str:
        """The image's path relative to root (POSIX), writing it the first time."""
        found = self._placed.get(image.name)
        if found is not None:
            return found
        folder = f"{self._kind}/{len(self._placed) // self._per_folder:05d}"
        rel = f"{folder}/{image.name}.{image.ext}"
        target = self._root / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if image.data is not None:
                target.write_bytes(image.data)
            else:
                assert image.path is not None
                link_or_copy(image.path, target)
        except OSError as exc:
            raise ManifestError(f"cannot write {target}: {exc.strerror or exc}") from None
        self._placed[image.name] = rel
        return rel
