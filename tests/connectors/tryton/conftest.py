"""One real Tryton for the connector tests: the seeded sandbox, started once per session.

Tests share it, so each one names its own customers and orders (unique ids). A sandbox that
cannot be built or started fails the tests that need it, with the reason; nothing skips.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.tryton.settings import TrytonSettings
from crmhub.dev.sandbox.tryton import TrytonServer


def started() -> Iterator[TrytonServer]:
    """A started sandbox Tryton, stopped afterwards; a failed start fails the test."""
    server = TrytonServer()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"the Tryton sandbox did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tryton_server() -> Iterator[TrytonServer]:
    yield from started()


@pytest.fixture
def tryton_settings(tryton_server: TrytonServer) -> TrytonSettings:
    return settings_for(tryton_server)


@pytest.fixture
def own_tryton() -> Iterator[TrytonServer]:
    """A Tryton of the test's own: for tests that stop it, or need an empty invoice history
    (Tryton numbers invoices in date order, so a back-dated invoice needs one)."""
    yield from started()


def settings_for(server: TrytonServer) -> TrytonSettings:
    return server.settings(timeout_seconds=60.0)
