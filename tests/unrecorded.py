"""Set-up shared by the tests of unrecorded objects (invariant 9): upload intents
(tests/infra/test_reconcile.py) and the reconciler (tests/workers/retention/test_reconcile.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import face_image, jpeg_bytes
from tests.rights import veil


def face_photo(folder: Path, name: str, seed: int) -> Path:
    """A small JPEG with a face, written to ``folder/name``."""
    path = folder / name
    path.write_bytes(jpeg_bytes(face_image(seed, size=96)))
    return path


def unrecorded_in_status() -> dict[str, Any]:
    """What `veil status --json` counts of objects no ledger row records."""
    return dict(json.loads(veil("status", "--json").stdout)["unrecorded_objects"])
