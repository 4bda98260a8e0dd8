"""Adapters to the real services: settings, database, object store, broker, local stack."""
