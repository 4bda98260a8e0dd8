"""Veil's contracts: messages, policies, object keys, enums and SQL migrations. No I/O here."""
