"""Shared pytest configuration. Fixtures live in tests/fixtures_*.py modules, registered here."""

pytest_plugins: list[str] = []
