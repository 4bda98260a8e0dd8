"""Walking the folders a user names, for `veil ingest` and `veil redact`: which entries to take.

Hazard: a symbolic link under a folder can point anywhere (``photos/x.jpg -> /etc/passwd``).
Such a link is refused with a reason instead of being read and uploaded; a link whose target
lies inside the folder is followed as usual. Linked folders are not descended into (a link to
``/`` would walk the whole machine; one to a folder inside is walked where it lies).

Names are whatever the file system allows: bytes that are not UTF-8 come back from the OS as
surrogate escapes, which PostgreSQL and terminals refuse; :func:`display_name` makes them text.
"""

from __future__ import annotations

import os
from pathlib import Path


def walk(folder: Path) -> list[Path]:
    """Every file and every symbolic link under ``folder``, sorted; linked folders are listed,
    not entered."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        found.extend(Path(root, name) for name in files)
        found.extend(Path(root, name) for name in dirs if os.path.islink(Path(root, name)))
    return sorted(found)


def outside_link(item: Path, folder: Path) -> str | None:
    """Why ``item`` (found under ``folder``) must not be followed, or None: a symbolic link
    whose target lies outside the folder, or one that does not resolve."""
    if not item.is_symlink():
        return None
    try:
        inside = item.resolve(strict=False).is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a loop of links
        return "a symbolic link that does not resolve (a loop of links); not followed"
    if inside:
        return None
    return "a symbolic link to a target outside the folder given; not followed"


def is_linked_folder(item: Path) -> bool:
    return item.is_symlink() and item.is_dir()


def display_name(name: str) -> str:
    """``name`` as valid text: bytes that are not UTF-8 (surrogate escapes from the OS) are
    written as ``\\xNN``, everything else is kept."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
