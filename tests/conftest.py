"""Shared pytest configuration."""

from tests._postgres_helpers import fresh_database, postgres_url  # noqa: F401 -- fixtures
