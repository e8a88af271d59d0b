"""Shared fixtures: real databases (SQLite files and PostgreSQL), a fixed clock, small factories.

Every database test runs twice, on SQLite and on PostgreSQL (127.0.0.1:5432, trust auth).
The schema is migrated once per session into a template (a SQLite file, a PostgreSQL
template database); each test gets a fresh copy of its own and drops it afterwards.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import Engine

from models.db import make_engine, transaction
from tests.factories import NOW, load_sample

POSTGRES_ADMIN_URL = os.environ.get(
    "PROCURE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
RUN_ID = uuid.uuid4().hex[:8]


def _migrate(url: str, *, sample: bool) -> None:
    from procure.database import migrate

    engine, _, _ = migrate(url)
    try:
        if sample:
            with transaction(engine) as session:
                load_sample(session)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def sqlite_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("templates")
    out = {}
    for name, sample in (("empty", False), ("sample", True)):
        path = folder / f"{name}.db"
        _migrate(f"sqlite:///{path}", sample=sample)
        out[name] = path
    return out


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({exc}); "
            "start it (.ci/run does) or set PROCURE_TEST_POSTGRES_URL",
            pytrace=False,
        )


def _pg_url(database: str) -> str:
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def postgres_templates() -> Iterator[dict[str, str]]:
    out = {}
    with _admin() as admin:
        for name, sample in (("empty", False), ("sample", True)):
            database = f"procure_tpl_{RUN_ID}_{name}"
            admin.execute(f'CREATE DATABASE "{database}"')
            _migrate(_pg_url(database), sample=sample)
            out[name] = database
    yield out
    with _admin() as admin:
        for database in out.values():
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


class Databases:
    """Makes fresh databases from the templates and drops them at the end of the test."""

    def __init__(self, backend: str, request: pytest.FixtureRequest, tmp_path: Path):
        self.backend = backend
        self.request = request
        self.tmp_path = tmp_path
        self.created: list[str] = []
        self.engines: list[Engine] = []

    def url(self, template: str = "sample") -> str:
        """A fresh database: "sample" (schema, pipeline, sample data), "empty" (schema only)
        or "blank" (nothing at all: a SQLite path that does not exist yet, an empty database)."""
        if self.backend == "sqlite":
            path = self.tmp_path / f"{template}-{len(self.created)}.db"
            if template != "blank":
                templates = self.request.getfixturevalue("sqlite_templates")
                shutil.copyfile(templates[template], path)
            self.created.append(str(path))
            return f"sqlite:///{path}"
        database = f"procure_t_{RUN_ID}_{uuid.uuid4().hex[:10]}"
        with _admin() as admin:
            if template == "blank":
                admin.execute(f'CREATE DATABASE "{database}"')
            else:
                templates = self.request.getfixturevalue("postgres_templates")
                admin.execute(f'CREATE DATABASE "{database}" TEMPLATE "{templates[template]}"')
        self.created.append(database)
        return _pg_url(database)

    def engine(self, template: str = "sample") -> Engine:
        engine = make_engine(self.url(template))
        self.engines.append(engine)
        return engine

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()
        if self.backend == "postgres" and self.created:
            with _admin() as admin:
                for database in self.created:
                    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Databases]:
    """Fresh databases on the parametrized backend."""
    dbs = Databases(request.param, request, tmp_path)
    yield dbs
    dbs.close()


@pytest.fixture
def backend(databases: Databases) -> str:
    return databases.backend


@pytest.fixture
def engine(databases: Databases) -> Engine:
    """A database with the schema, the default pipeline and the sample organisation and catalog."""
    return databases.engine("sample")


@pytest.fixture
def empty_engine(databases: Databases) -> Engine:
    """A database with the schema only."""
    return databases.engine("empty")


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture(autouse=True)
def _no_stray_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests choose their database and clock explicitly; a developer's settings never leak in.
    for name in ("PROCURE_DATABASE_URL", "PROCURE_HOME", "PROCURE_NOW"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROCURE_DEBUG", "1")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)
