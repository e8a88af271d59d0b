"""Opening the database for the CLI and the web app: schema checks and migrations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError

import migrations
from models.db import make_engine, normalize_url
from models.errors import InputError, Problem


def _parse(url: str) -> URL:
    try:
        return make_url(normalize_url(url))
    except (ArgumentError, ValueError):
        raise InputError(
            Problem(
                f"not a database URL: {url[:80]!r} (e.g. sqlite:///procure.db or "
                "postgresql://user@host/db)",
                field="--db",
            )
        ) from None


def _sqlite_path(url: str) -> Path | None:
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def engine_for(url: str) -> Engine:
    """An engine for the URL; bad URLs are named."""
    _parse(url)
    try:
        return make_engine(url)
    except (ArgumentError, ValueError) as exc:
        raise InputError(Problem(f"not a database URL: {exc}", field="--db")) from None
    except ModuleNotFoundError as exc:
        raise InputError(Problem(f"no driver for this URL ({exc.name})", field="--db")) from None


def schema_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None if it has no procure schema."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError) as exc:
        message = str(exc.orig) if getattr(exc, "orig", None) else str(exc)
        if (
            "alembic_version" in message
            or "no such table" in message
            or ("does not exist" in message and "relation" in message)
        ):
            return None
        raise InputError(
            Problem(f"cannot open the database: {message.strip().splitlines()[0]}", field="--db")
        ) from None


def open_database(url: str) -> Engine:
    """An engine on an existing, up-to-date procure database; a clear error otherwise."""
    path = _sqlite_path(url)
    if path is not None and not path.exists():
        raise InputError(Problem(f"no database at {path}: run `procure init` first", field="--db"))
    engine = engine_for(url)
    revision = schema_revision(engine)
    if revision is None:
        raise InputError(
            Problem("the database has no procure schema: run `procure init` first", field="--db")
        )
    _refuse_unknown(revision)
    if revision != migrations.HEAD:
        raise InputError(
            Problem(
                f"the database schema is at {revision}, this procure needs {migrations.HEAD}: "
                "run `procure init` to upgrade",
                field="--db",
            )
        )
    return engine


def _refuse_unknown(revision: str | None) -> None:
    if revision is not None and revision not in migrations.REVISIONS:
        raise InputError(
            Problem(
                f"the database schema is at {revision}, which this procure does not know "
                f"(it knows up to {migrations.HEAD}): it was written by a newer procure; "
                "upgrade procure instead",
                field="--db",
            )
        )


def migrate(url: str) -> tuple[Engine, str | None, str]:
    """Create or upgrade the schema to HEAD; returns (engine, revision before, revision after)."""
    from alembic import command
    from alembic.config import Config

    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = engine_for(url)
    before = schema_revision(engine)
    _refuse_unknown(before)
    config = Config()
    config.set_main_option("script_location", str(migrations.HERE))
    if before == migrations.HEAD:
        return engine, before, migrations.HEAD
    with migrations.migrating(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return engine, before, migrations.HEAD
