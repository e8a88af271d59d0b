"""Flow tests run under one Prefect test harness per test session (a real temporary server)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from procure.orchestration import prepare_environment


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    prepare_environment(tmp_path_factory.mktemp("procure-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def flow_db(engine: Engine, prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """The test's database, as the flows' tasks find it (PROCURE_DATABASE_URL), at NOW."""
    from tests.factories import NOW

    monkeypatch.setenv("PROCURE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("PROCURE_NOW", NOW.isoformat())
    assert os.environ["PROCURE_DATABASE_URL"]
    return engine
