"""Task names and their arguments. Arguments are ids only (invariant 5): never pixels, file
names or URLs, because Flower, Redis and logs all see them."""

from __future__ import annotations

import uuid
from typing import Final

REDACT_IMAGE: Final = "veil.redact_image"
# Several image jobs in one message, sent when the images queue is deep (``infra.outbox``):
# its arguments are the job ids, each a string.
REDACT_IMAGES: Final = "veil.redact_images"
RELAY_OUTBOX: Final = "veil.relay_outbox"
SWEEP_LEASES: Final = "veil.sweep_leases"
REDACT_CHUNK: Final = "veil.redact_chunk"
ASSEMBLE_VIDEO: Final = "veil.assemble_video"
PURGE: Final = "veil.purge"
RECONCILE_OBJECTS: Final = "veil.reconcile_objects"
ERASE: Final = "veil.erase"  # argument: an erasure request id recorded by `veil erase`

TASK_FOR_JOB_KIND: Final = {"image": REDACT_IMAGE, "chunk": REDACT_CHUNK,
                            "assemble": ASSEMBLE_VIDEO}


def job_task_args(job_id: uuid.UUID | str) -> list[str]:
    """The positional arguments of every job task: the job id as a string, nothing else."""
    return [str(uuid.UUID(str(job_id)))]


def job_batch_args(job_ids: list[uuid.UUID | str]) -> list[str]:
    """The positional arguments of a batch task: one job id string per job, nothing else."""
    return [str(uuid.UUID(str(job_id))) for job_id in job_ids]
