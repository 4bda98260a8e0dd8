"""Celery workers and the vision code they run."""
