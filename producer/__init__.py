"""The ingest side and the operator's `veil` command."""
