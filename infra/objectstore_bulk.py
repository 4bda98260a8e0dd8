"""Deleting every version of many keys at once: ranged version listings and S3 DeleteObjects.

Why: deleting key by key costs three round trips an object (list its versions, delete each
version, list again to prove none is left), and on SeaweedFS a one-key version listing costs
about as much as a delete. Here the keys of one bucket are listed together: the due keys of one
folder (``sources/<id>/chunks/``, a camera's inbox folder) by one listing under the longest
prefix they share, the rest key by key; then their versions go in DeleteObjects requests of up
to :data:`DELETE_CHUNK` versions, several in flight; then one more listing proves them gone.
Measured on SeaweedFS 4.48 (bench/runs/history.md): 5,000 objects purged 2.2 to 3.1 times as
fast as key by key; what is left is the server's own work (about 2.6 ms of its CPU a version
deleted by DeleteObjects, 0.4 ms a version listed).

Hazards:

- Buckets are versioned: every delete names its version id. A DeleteObjects entry without one
  only adds a delete marker (measured on SeaweedFS 4.48: even for a key that does not exist).
- The server answers per object: a version under S3 legal hold (``AccessDenied``) fails only
  its key; a request that fails as a whole (missing bucket, no answer) fails the keys it named.
- A ranged listing is only believed when it was read to its end (see :func:`_list_range`);
  one that turns out to hold many keys that are not due (a big folder) is given up after
  :data:`RANGE_BUDGET_PER_KEY` entries a key, and its keys are listed one by one, so it never
  costs much more than the one-key listings it replaces.
- A writer may add a version meanwhile: keys are listed again after their delete, up to
  :data:`PASSES` rounds; a key still gaining versions fails as transient.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from minio import Minio
from minio.deleteobjects import DeleteError, DeleteObject

from infra.objectstore import TransientStorageError, list_all_versions, transient_errors

log = logging.getLogger(__name__)

RANGE_MIN_KEYS = 4  # fewer due keys in one folder: one-key listings
RANGE_SPLIT_KEYS = 64  # a run is split under longer prefixes while a part keeps this many
# Entries a ranged listing may read per wanted key before it gives up on a sparse range. On
# SeaweedFS 4.48 a version listing costs about 0.4 ms of server CPU an entry and a one-key
# listing about 1 ms (measured), so a range given up after 4 entries a key wastes at most
# about twice what the one-key listings cost; a dense range holds up to 4 versions a key.
RANGE_BUDGET_PER_KEY = 4
# Versions per DeleteObjects request (S3 allows 1000). SeaweedFS spends the same per version
# for 10 to 1,000 (measured); 50 keeps several requests of a 500-task batch in flight.
DELETE_CHUNK = 50
PASSES = 3  # delete rounds; each is followed by a listing

Versions = dict[str, list[str | None]]
A = TypeVar("A")
T = TypeVar("T")


@dataclass
class KeyOutcome:
    """What happened to one key: the version ids deleted, when its last went, or the error."""

    versions: list[str | None] = field(default_factory=list)
    deleted_at: datetime | None = None
    error: str | None = None


def delete_every_version(client: Minio, bucket: str, keys: Collection[str],
                         threads: int = 8) -> dict[str, KeyOutcome]:
    """Remove every version and delete marker of each of ``keys`` in ``bucket``.

    Never raises for one key's sake: a key the server refused, or that could not be listed,
    gets ``error`` and keeps its versions; every other key ends with none left (listed after).
    """
    outcomes = {k: KeyOutcome() for k in keys}
    pending = sorted(outcomes)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for round_ in range(PASSES + 1):
            listed = _list_versions(pool, client, bucket, pending, outcomes)
            left = {k: v for k, v in listed.items() if v}
            if not left:
                break
            if round_ == PASSES:
                for key in left:
                    outcomes[key].error = (f"{TransientStorageError.__name__}: {bucket}/{key}"
                                           " kept gaining versions while deleted")
                break
            _delete_listed(pool, client, bucket, left, outcomes)
            pending = sorted(k for k in left if outcomes[k].error is None)
    now = datetime.now(UTC)
    for outcome in outcomes.values():
        outcome.deleted_at = outcome.deleted_at or now
    log.info("deleted %d versions of %d keys in %s",
             sum(len(o.versions) for o in outcomes.values() if o.error is None),
             sum(o.error is None for o in outcomes.values()), bucket)
    return outcomes


def _guarded(fn: Callable[[Minio, str, A], T], client: Minio, bucket: str, arg: A) -> T | str:
    """``fn``'s result, or its error in words: one failed request must not lose the others."""
    try:
        with transient_errors():
            return fn(client, bucket, arg)
    except Exception as exc:  # recorded on the keys and retried with backoff by the caller
        return f"{type(exc).__name__}: {exc}"


def _list_versions(pool: ThreadPoolExecutor, client: Minio, bucket: str, keys: list[str],
                   outcomes: dict[str, KeyOutcome]) -> Versions:
    """Every version of each of ``keys``; a key that could not be listed gets its error in
    ``outcomes`` and is left out."""
    runs, singles = _ranges(keys)
    found: Versions = {}
    for run, ranged in zip(runs, pool.map(lambda r: _guarded(_list_range, client, bucket, r),
                                          runs), strict=True):
        if isinstance(ranged, str):
            for key in run:
                outcomes[key].error = ranged
        elif ranged is None:
            singles.extend(run)
        else:
            found.update(ranged)
    for key, one in zip(singles, pool.map(lambda k: _guarded(_list_key, client, bucket, k),
                                          singles), strict=True):
        if isinstance(one, str):
            outcomes[key].error = one
        else:
            found[key] = one
    return found


def _ranges(keys: Collection[str]) -> tuple[list[list[str]], list[str]]:
    """Runs of at least :data:`RANGE_MIN_KEYS` keys of one folder, each under the longest prefix
    they share (one listing each), and the keys to list one by one.

    A run is split by the character after its shared prefix while a part keeps at least
    :data:`RANGE_SPLIT_KEYS` keys: 200 keys ``x/000200`` to ``x/000399`` become ``x/0002`` and
    ``x/0003``, whose listings read just those keys, not ``x/000400`` to ``x/000999`` as
    ``x/000`` would (parts too small for a range of their own are listed one by one)."""
    folders: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys):
        folders[key.rpartition("/")[0]].append(key)
    runs: list[list[str]] = []
    singles: list[str] = []
    todo = list(folders.values())
    while todo:
        run = todo.pop()
        if len(run) < RANGE_MIN_KEYS:
            singles.extend(run)
            continue
        depth = len(os.path.commonprefix(run))
        parts: dict[str, list[str]] = defaultdict(list)
        for key in run:
            parts[key[depth:depth + 1]].append(key)
        if all(len(part) < RANGE_SPLIT_KEYS for part in parts.values()):
            runs.append(run)
        else:
            todo.extend(parts.values())
    return runs, singles


def _list_key(client: Minio, bucket: str, key: str) -> list[str | None]:
    return [v for k, v in list_all_versions(client, bucket, key) if k == key]


def _list_range(client: Minio, bucket: str, keys: list[str]) -> Versions | None:
    """The versions of the sorted ``keys`` from one listing of everything after the first
    under their shared prefix; None when that holds more than :data:`RANGE_BUDGET_PER_KEY`
    entries a key (the keys are then listed one by one).

    Only a listing read to its end is trusted, never one cut short by key: minio returns a
    page's delete markers after its versions, and SeaweedFS collects a page in the filer's
    order, which is not key order when one key extends another (``a-b`` and ``a``).

    Hazard: minio 7's public ``list_objects`` always asks for pages of 1000 entries, and
    SeaweedFS reads every entry it returns (about 0.4 ms of CPU each, measured), so a run of
    40 keys would pay for 1000. The page size is only reachable through
    ``Minio._list_objects`` (minio is pinned below 8; the purge tests run this path).
    """
    budget = min(1000, RANGE_BUDGET_PER_KEY * len(keys) + 1)
    found: Versions = {k: [] for k in keys}
    listing = client._list_objects(bucket, prefix=os.path.commonprefix(keys),
                                   include_version=True, start_after=keys[0][:-1] or None,
                                   max_keys=budget, encoding_type="url")
    for seen, obj in enumerate(listing, 1):
        if seen >= budget:
            return None
        if obj.object_name in found:
            found[obj.object_name].append(obj.version_id)
    return found


def _delete_listed(pool: ThreadPoolExecutor, client: Minio, bucket: str, listed: Versions,
                   outcomes: dict[str, KeyOutcome]) -> None:
    """DeleteObjects for every listed version; errors land on their keys' outcomes."""
    entries = [DeleteObject(k, v) for k, versions in listed.items() for v in versions]
    chunks = [entries[i:i + DELETE_CHUNK] for i in range(0, len(entries), DELETE_CHUNK)]
    for chunk, result in zip(chunks, pool.map(lambda c: _guarded(_remove, client, bucket, c),
                                              chunks), strict=True):
        when = datetime.now(UTC)
        errors = ({e.name: result for e in chunk} if isinstance(result, str)
                  else _errors_by_key(result, chunk))
        for entry in chunk:
            outcome = outcomes[entry.name]
            if entry.name in errors:
                outcome.error = outcome.error or errors[entry.name]
            elif outcome.error is None:
                outcome.versions.append(entry.version_id)
                outcome.deleted_at = when


def _remove(client: Minio, bucket: str, chunk: list[DeleteObject]) -> list[DeleteError]:
    return list(client.remove_objects(bucket, chunk))


def _errors_by_key(errors: list[DeleteError], chunk: list[DeleteObject]) -> dict[str, str]:
    """Per-object errors by key; an error naming no key of the chunk (the request's own) hits
    them all."""
    names = {e.name for e in chunk}
    out: dict[str, str] = {}
    for err in errors:
        text = f"{err.code}: {err.message} (version {err.version_id})"
        for name in [err.name] if err.name in names else names:
            out.setdefault(name, text)
    return out
