"""Video-specific commands (none yet beyond ingest, status and redact, which handle videos)."""
