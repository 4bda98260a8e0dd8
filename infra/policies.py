"""Load the operator's policies file named in settings."""

from __future__ import annotations

from infra.settings import Settings, get_settings
from schemas.policy import Policy, parse_policies


class UnknownPolicyError(ValueError):
    pass


def load_policies(settings: Settings | None = None) -> dict[str, Policy]:
    settings = settings or get_settings()
    return parse_policies(settings.policies_file.read_text())


def get_policy(name: str | None, settings: Settings | None = None) -> Policy:
    settings = settings or get_settings()
    policies = load_policies(settings)
    name = name or settings.default_policy
    if name not in policies:
        raise UnknownPolicyError(f"unknown policy {name!r}; known: {', '.join(sorted(policies))}")
    return policies[name]
