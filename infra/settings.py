"""One settings object for every Veil process.

Read from the environment with the ``VEIL_`` prefix; nested groups use ``__`` (for example
``VEIL_S3__ENDPOINT`` or ``VEIL_DB__URL``). Defaults target the embedded local stack started by
``veil stack up``; ``VEIL_ENV=production`` refuses the default credentials so that a forgotten
variable cannot ship the development secrets.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECRET = "veil-dev-secret-change-me"


class S3Credentials(BaseModel):
    access_key: str
    secret_key: SecretStr


def _creds(role: str) -> S3Credentials:
    return S3Credentials(access_key=f"veil-{role}", secret_key=SecretStr(DEFAULT_SECRET))


class S3Settings(BaseModel):
    """Object storage. One credential pair per role keeps `raw` readable only by those who must."""

    endpoint: str = "127.0.0.1:8333"
    secure: bool = False
    # The CA that signed the S3 server's certificate (compose: infra/certs.sh); None: system CAs.
    ca_file: Path | None = None
    region: str = "us-east-1"
    bucket_raw: str = "veil-raw"
    bucket_work: str = "veil-work"
    bucket_redacted: str = "veil-redacted"
    bucket_inbox: str = "veil-inbox"
    # What each role may do is the table in infra/grants.py (docs/security.md). admin only
    # bootstraps buckets; retention is the only deleter; hold the only one to change a legal
    # hold. A process needs only its own pair: a role whose secret is left at the development
    # default is refused in production when it is used (objectstore.client_for).
    admin: S3Credentials = Field(default_factory=lambda: _creds("admin"))
    producer: S3Credentials = Field(default_factory=lambda: _creds("producer"))
    worker: S3Credentials = Field(default_factory=lambda: _creds("worker"))
    retention: S3Credentials = Field(default_factory=lambda: _creds("retention"))
    hold: S3Credentials = Field(default_factory=lambda: _creds("hold"))
    operator: S3Credentials = Field(default_factory=lambda: _creds("operator"))
    uploader: S3Credentials = Field(default_factory=lambda: _creds("uploader"))  # cameras, NVRs

    def buckets(self) -> list[str]:
        return [self.bucket_raw, self.bucket_work, self.bucket_redacted, self.bucket_inbox]


DbRole = Literal["owner", "producer", "worker", "retention", "operator"]


class DatabaseSettings(BaseModel):
    """``url`` is this process's connection. A command that acts as a role (see
    ``producer.cli_common.COMMAND_ROLES``) connects with :meth:`url_for`: the role's entry in
    ``role_urls`` (``VEIL_DB__ROLE_URLS='{"producer": "postgresql://..."}'``), else, with
    ``role_users`` on (development: trust or .pgpass), ``url`` with the user ``veil_<role>``,
    else ``url`` itself (compose gives each service its own ``url`` and turns this off)."""

    url: str = "postgresql://postgres@127.0.0.1:5432/veil"
    connect_timeout_s: int = 5
    role_urls: dict[str, str] = Field(default_factory=dict)
    role_users: bool = True

    def url_for(self, role: DbRole) -> str:
        if role in self.role_urls:
            return self.role_urls[role]
        if not self.role_users:
            return self.url
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        return parts._replace(netloc=f"veil_{role}@{host}").geturl()


class BrokerSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    result_url: str = "redis://127.0.0.1:6379/1"
    queue_prefix: str = "veil"


# Peak memory of an image job, fitted to bench/memory_image.py (79 MP JPEG: 1288 MB), with
# margin: a worker child's own size, the models and their activations, then per pixel the
# decoded frame (3 B), the JPEG guard's decoded view (3 B), the encoded output and resizes.
IMAGE_BASE_MB = 512
IMAGE_BYTES_PER_PIXEL = 12


class LimitSettings(BaseModel):
    """Guards against hostile input and runaway tasks (invariants 2 and 7)."""

    max_image_pixels: int = 80_000_000
    # Peak resident memory one image job may need, and the pool child's limit: a child above it
    # after a task is replaced (Celery worker_max_memory_per_child). Measured at the default
    # pixel limit: 0.85 GB (PNG) to 1.3 GB (JPEG) peak; see docs/limits.md for the agreement rule.
    worker_max_memory_mb: int = 2048
    max_file_bytes: int = 2 * 1024**3
    task_soft_time_limit_s: int = 540
    task_hard_time_limit_s: int = 600
    # Redis re-delivers an unacknowledged task after this long; it must exceed the hard limit.
    visibility_timeout_s: int = 3600
    # A running job renews its lease every heartbeat_interval_s (a thread in the worker child);
    # the sweeper runs every sweep_interval_s and re-queues a running job whose lease expired.
    # A lost worker's job is re-queued within job_lease_s + sweep_interval_s (120 s by default;
    # docs/operating.md gives the arithmetic, tests/test_settings.py pins it under 180 s).
    job_lease_s: int = 60
    heartbeat_interval_s: int = 20
    sweep_interval_s: int = 60
    # Attempts of a job, whatever ended them; with the backoff below, 8 attempts wait about
    # 2 minutes in all for a service to come back (5 waited ~16 s: a 20 s S3 outage failed jobs).
    max_attempts: int = 8
    retry_backoff_max_s: int = 120
    relay_grace_s: int = 30
    # Several images per task when the queue is deep: once the images queue holds at least
    # images_batch_depth messages, image jobs are sent up to images_per_task ids a message, so a
    # node spends its broker round trips, acks and Flower events per batch, not per image
    # (docs/configuration.md gives the figures). A shallow queue gets one image a message, so an
    # idle node's children all start at once. images_per_task 1 turns batching off.
    images_per_task: int = Field(default=8, ge=1, le=64)
    images_batch_depth: int = Field(default=16, ge=0)
    # A queued job whose message may be lost (Redis restarted without persistence) is re-sent.
    requeue_after_s: int = 1800
    # An object in raw/work/redacted with no ledger row, older than this, gets a deletion task
    # due now (the reconciler, every reconcile_interval_s); an ingest's upload intent (a
    # deletion task written before the bytes) falls due this long after it was written.
    orphan_grace_s: int = 900
    reconcile_interval_s: int = 300

    def lost_worker_requeue_bound_s(self) -> int:
        """The latest a lost worker's job is re-queued after the worker died: its last lease
        renewal was at most at the death, so the lease runs out within ``job_lease_s``, and the
        next sweep comes within ``sweep_interval_s``."""
        return self.job_lease_s + self.sweep_interval_s

    @model_validator(mode="after")
    def _pixels_fit_memory(self) -> LimitSettings:
        """The pixel limit and the memory bound must agree (docs/limits.md): an image at the
        limit needs about IMAGE_BASE_MB plus IMAGE_BYTES_PER_PIXEL for each pixel."""
        needed = IMAGE_BASE_MB + self.max_image_pixels * IMAGE_BYTES_PER_PIXEL / 1024**2
        if needed > self.worker_max_memory_mb:
            raise ValueError(
                f"limits.max_image_pixels = {self.max_image_pixels} needs about {needed:.0f} MB "
                f"per image job, above limits.worker_max_memory_mb = "
                f"{self.worker_max_memory_mb}; lower the first or raise the second")
        return self


class ModelSettings(BaseModel):
    """Weights come from installed packages or a configured path, never a download.

    ``detectors`` names the backends a worker runs (``centerface``, ``text``, ``yolo``); their
    detections are pooled and each policy keeps the classes it redacts. ``detector_options``
    overrides a backend's config fields, e.g. ``{"centerface": {"threshold": 0.1}}``.
    """

    centerface_path: Path | None = None
    text_path: Path | None = None  # default: the PP-OCRv4 detector in rapidocr-onnxruntime
    detectors: list[str] = Field(default_factory=lambda: ["centerface", "text"])
    detector_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # An operator's YOLO-style ONNX model: the model's class names in index order, which of them
    # Veil redacts as which class (face, plate, text, custom; unmapped names are ignored, except
    # names that already are Veil classes), and the square input size it was exported with.
    yolo_path: Path | None = None
    yolo_class_names: list[str] = Field(default_factory=list)
    yolo_classes: dict[str, str] = Field(default_factory=dict)
    yolo_input_size: int = 640
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = 0


class VideoSettings(BaseModel):
    """Video decoding and encoding on this node (issue: video).

    Every node that serves one queue must use the same ``encoder``: chunks of one video are
    joined by stream copy, which needs identical H.264 parameter sets (assembly checks).
    """

    encoder: Literal["libx264", "h264_nvenc", "auto"] = "libx264"
    # x264 speed/size trade-off; quality is the policy's video_crf. superfast: 7 ms a 960x540
    # frame against veryfast's 12, files 9 % larger (bench/README.md).
    preset: str = "superfast"
    keyframe_seconds: float = Field(default=2.0, gt=0)


class RetentionSettings(BaseModel):
    """The scheduled purge, its retries, and S3 object lock (issue: retention).

    A deletion that fails is retried after ``retry_base_s * 2**(attempts - 1)`` (capped at
    ``retry_max_s``; ``schemas.backoff``); after ``max_attempts`` it is marked ``failed`` (loud
    in `veil status` and the metrics) and still retried at the cap: a deadline is never dropped.
    ``s3_object_lock`` creates *new* buckets with object lock, so that a legal hold is also
    enforced by the S3 server; buckets created without it get ledger-only holds.
    """

    purge_interval_s: int = 60
    # 500: against 200 and 1,000, the most objects/s with two purgers (bench/purge_throughput);
    # a batch holds its row locks (and so `veil hold set`) for about a second.
    purge_batch: int = 500
    purge_threads: int = 8  # listings and DeleteObjects requests in flight per purger
    purge_max_runtime_s: int = 300
    retry_base_s: int = 30
    retry_max_s: int = 3600
    max_attempts: int = 5
    s3_object_lock: bool = True


def default_state_dir() -> Path:
    """Where the local stack keeps its state, logs and the int8 model cache.

    In a source checkout (``pyproject.toml`` beside the packages) it is the checkout's
    git-ignored ``.state/``, as the Makefile and the tests expect. An installed package must not
    write into ``site-packages`` (read-only for a service user, and shared by every user), so
    there it is ``$XDG_STATE_HOME/veil`` (``~/.local/state/veil``).
    """
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "infra").is_dir():
        return REPO_ROOT / ".state"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "veil"


class WatchSettings(BaseModel):
    """`veil watch`: which inbox to follow and how hard to push (issue: bulk ingestion).

    ``prefix`` limits the watcher to part of each bucket (the camera is the key's first segment
    after it). ``events_key`` is the Redis list MinIO publishes bucket events to ("access"
    format); empty turns events off and leaves the listing sweep alone.
    """

    buckets: list[str] = Field(default_factory=list)  # empty: [s3.bucket_inbox]
    prefix: str = ""
    poll_s: float = Field(default=5.0, gt=0)
    max_queue_depth: int = Field(default=500, ge=1)
    unknown_cameras: Literal["default", "refuse"] = "default"
    stable_s: float = Field(default=2.0, ge=0)
    events_key: str = "veil:inbox-events"
    events_url: str = ""  # empty: the broker's Redis
    spool_above_bytes: int = 32 * 1024**2  # inbox objects larger than this are never in memory


class StackSettings(BaseModel):
    state_dir: Path = Field(default_factory=default_state_dir)
    s3_port: int = 8333
    master_port: int = 9333
    volume_port: int = 8080
    filer_port: int = 8888
    flower_port: int = 5555
    flower_user: str = "veil"
    flower_password: SecretStr = SecretStr(DEFAULT_SECRET)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VEIL_", env_nested_delimiter="__", extra="ignore"
    )

    env: Literal["development", "test", "production"] = "development"
    s3: S3Settings = Field(default_factory=S3Settings)
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    video: VideoSettings = Field(default_factory=VideoSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    cameras_file: Path | None = None  # VEIL_CAMERAS_FILE: camera -> policy, zone, capture time
    policies_file: Path = Path(__file__).resolve().parent / "assets" / "policies.toml"
    default_policy: str = "default"
    worker_concurrency: int = 0
    # Fault injection for the test suite only (a slow job to SIGKILL mid-way); refused elsewhere.
    test_job_delay_s: float = 0.0
    # Fault injection: ingest pauses this long after uploading, before recording (to SIGKILL it).
    test_ingest_pause_s: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> Settings:
        hard = self.limits.task_hard_time_limit_s
        if self.limits.visibility_timeout_s <= hard:
            raise ValueError(
                f"limits.visibility_timeout_s ({self.limits.visibility_timeout_s}) must exceed "
                f"the hard task time limit ({hard}), or Redis re-delivers running tasks"
            )
        if self.limits.task_soft_time_limit_s >= hard:
            raise ValueError("limits.task_soft_time_limit_s must be below the hard limit")
        if self.limits.heartbeat_interval_s * 3 > self.limits.job_lease_s:
            raise ValueError(
                f"limits.heartbeat_interval_s ({self.limits.heartbeat_interval_s}) must be at most "
                f"a third of limits.job_lease_s ({self.limits.job_lease_s}): a lease must survive "
                "two late heartbeats, or a busy worker's job is re-queued while it runs")
        if self.test_ingest_pause_s and self.env != "test":
            raise ValueError("test_ingest_pause_s is allowed only with VEIL_ENV=test")
        if self.test_job_delay_s and self.env != "test":
            raise ValueError("test_job_delay_s is allowed only with VEIL_ENV=test")
        if self.env == "production":
            problems = plaintext_connections(self)
            if problems:
                raise ValueError("production refuses plaintext connections: "
                                 + "; ".join(problems))
        return self

    def s3_roles(self) -> dict[str, S3Credentials]:
        return {"admin": self.s3.admin, "producer": self.s3.producer,
                "worker": self.s3.worker, "retention": self.s3.retention,
                "hold": self.s3.hold, "operator": self.s3.operator,
                "uploader": self.s3.uploader}

    def for_db_role(self, role: DbRole) -> Settings:
        """A copy whose ``db.url`` is ``role``'s connection (a copy can switch again: the role
        URLs stay, and a derived user is swapped, not stacked)."""
        return self.model_copy(update={"db": self.db.model_copy(
            update={"url": self.db.url_for(role)})})


def plaintext_connections(settings: Settings) -> list[str]:
    """What would travel in clear: data keys come from PostgreSQL, media from S3, task ids
    through Redis. Empty when S3 is TLS, every PostgreSQL URL verifies the server's certificate
    and name (sslmode=verify-full) and Redis is rediss://."""
    problems = []
    if not settings.s3.secure:
        problems.append("S3 without TLS (set VEIL_S3__SECURE=true)")
    for name, url in [("db.url", settings.db.url),
                      *((f"db.role_urls.{r}", u) for r, u in settings.db.role_urls.items())]:
        mode = parse_qs(urlsplit(url).query).get("sslmode", [""])[-1]
        if mode != "verify-full":
            problems.append(f"{name} without sslmode=verify-full")
    for name, url in [("broker.url", settings.broker.url),
                      ("broker.result_url", settings.broker.result_url)]:
        if urlsplit(url).scheme != "rediss":
            problems.append(f"{name} is not rediss:// (Redis over TLS)")
    return problems


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()
