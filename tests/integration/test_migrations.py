"""Migrations on SQLite and PostgreSQL: the schema they build is exactly the models' schema.

`procure.database.migrate` creates or upgrades a database to `migrations.HEAD`;
`open_database` opens only a database at HEAD and says clearly what to do otherwise.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

import migrations
from models.audit import verify
from models.db import make_engine, transaction
from models.errors import InputError
from models.reference import REFERENCE_TABLES
from models.schema import metadata
from procure.database import migrate, open_database
from tests.conftest import POSTGRES_ADMIN_URL, RUN_ID, Databases

AUDIT_TRIGGERS = {
    "sqlite": ["audit_event_no_delete", "audit_event_no_update", "audit_head_no_delete"],
    "postgres": [
        "audit_event_append_only",
        "audit_event_no_truncate",
        "audit_head_no_delete",
        "audit_head_no_truncate",
    ],
}
# Every table the reference cache keeps has the trigger that stamps its changes.
STAMP_TRIGGERS = {
    "sqlite": [
        f"{t}_{verb}_stamp" for t in REFERENCE_TABLES for verb in ("insert", "update", "delete")
    ],
    "postgres": [f"{t}_stamp" for t in REFERENCE_TABLES],
}
TRIGGERS = {
    backend: sorted(AUDIT_TRIGGERS[backend] + STAMP_TRIGGERS[backend]) for backend in AUDIT_TRIGGERS
}


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations.HERE))
    return config


def schema_diff(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def triggers(engine: Engine) -> list[str]:
    query = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
        "postgres": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal",
    }["sqlite" if engine.dialect.name == "sqlite" else "postgres"]
    with engine.connect() as connection:
        return sorted(connection.execute(text(query)).scalars())


def revisions(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def snapshot(engine: Engine) -> dict[str, Any]:
    """What a no-op migration must leave alone: revisions, triggers, every row of a few tables."""
    with engine.connect() as connection:
        rows = {
            table: connection.execute(text(f"SELECT * FROM {table} ORDER BY 1")).all()
            for table in ("audit_event", "audit_head", "pipeline_version", "person", "item")
        }
    return {"revisions": revisions(engine), "triggers": triggers(engine), "rows": rows}


@pytest.fixture
def blank_url(databases: Databases, tmp_path: Path) -> str:
    """A database that exists but holds nothing: an empty SQLite file, a new PostgreSQL database."""
    if databases.backend == "sqlite":
        path = tmp_path / "blank.db"
        path.touch()
        return f"sqlite:///{path}"
    name = f"procure_blank_{RUN_ID}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    databases.created.append(name)  # dropped with the test's other databases
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def keep(databases: Databases, engine: Engine) -> Engine:
    """Let the fixture dispose the engine before it drops the database."""
    databases.engines.append(engine)
    return engine


def upgrade_to(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


# ------------------------------------------------------------------ the schema


def test_migrations_head_is_the_alembic_scripts_only_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [migrations.HEAD]
    assert [r.revision for r in script.walk_revisions()] == list(reversed(migrations.REVISIONS))


def test_a_fresh_database_migrates_to_exactly_the_models_schema(
    databases: Databases, blank_url: str
) -> None:
    engine, before, after = migrate(blank_url)
    keep(databases, engine)
    assert (before, after) == (None, migrations.HEAD)
    assert revisions(engine) == [migrations.HEAD]
    diff = schema_diff(engine)
    assert diff == [], f"the migrations and the models disagree: {diff}"
    assert triggers(engine) == TRIGGERS[databases.backend]


def test_the_test_templates_have_exactly_the_models_schema(empty_engine: Engine) -> None:
    assert schema_diff(empty_engine) == []
    assert revisions(empty_engine) == [migrations.HEAD]


def test_migrating_twice_is_a_no_op(databases: Databases) -> None:
    url = databases.url("sample")
    engine = keep(databases, make_engine(url))
    before = snapshot(engine)
    assert before["rows"]["audit_event"]  # the sample database is not empty

    again, revision_before, revision_after = migrate(url)
    keep(databases, again)
    assert (revision_before, revision_after) == (migrations.HEAD, migrations.HEAD)
    assert snapshot(engine) == before
    assert schema_diff(engine) == []
    with transaction(engine, readonly=True) as session:
        assert verify(session).ok


def test_an_older_database_is_upgraded_and_gets_the_append_only_triggers(
    databases: Databases, blank_url: str
) -> None:
    upgrade_to(blank_url, "0001")
    engine, before, after = migrate(blank_url)
    keep(databases, engine)
    assert (before, after) == ("0001", migrations.HEAD)
    assert triggers(engine) == TRIGGERS[databases.backend]
    assert schema_diff(engine) == []
    with (
        pytest.raises(DBAPIError, match="audit_event is append-only"),
        engine.begin() as connection,
    ):
        connection.execute(
            text(
                "INSERT INTO audit_event (seq, at, actor, entity, entity_id, action, details, "
                "prev_hash, hash) VALUES (1, CURRENT_TIMESTAMP, 'a', 'e', '1', 'x', '{}', 'p', 'h')"
            )
        )
        connection.execute(text("DELETE FROM audit_event"))


def test_a_populated_database_at_0007_gets_leaves_on_and_keeps_its_people(
    databases: Databases, blank_url: str
) -> None:
    upgrade_to(blank_url, "0007")
    engine = keep(databases, make_engine(blank_url))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO person (email, name, department, active) VALUES "
                "('nina.newhire@example.com', 'Nina Newhire', 'Engineering', true), "
                "('old.leaver@example.com', 'Old Leaver', '', false)"
            )
        )
    again, before, after = migrate(blank_url)
    keep(databases, again)
    assert (before, after) == ("0007", migrations.HEAD)
    assert schema_diff(again) == []
    assert triggers(again) == TRIGGERS[databases.backend]  # the stamp triggers on person too
    with again.connect() as connection:
        rows = connection.execute(
            text("SELECT email, name, department, active, leaves_on FROM person ORDER BY email")
        ).all()
    assert [tuple(r) for r in rows] == [
        ("nina.newhire@example.com", "Nina Newhire", "Engineering", True, None),
        ("old.leaver@example.com", "Old Leaver", "", False, None),
    ]


def test_a_populated_database_at_0008_gets_holds_data_true_for_every_item(
    databases: Databases, blank_url: str
) -> None:
    """Until its catalog says otherwise, an item already on file holds data: its returned
    units still need their certified erasure."""
    upgrade_to(blank_url, "0008")
    engine = keep(databases, make_engine(blank_url))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO supplier (id, code, name, lead_time_days, email, sla_terms, "
                "warranty_terms, return_terms, certified_erasure) VALUES "
                "(1, 'NORDIC-IT', 'Nordic IT', 10, '', '', '', '', false)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO item (sku, name, category, specs, list_price, currency, "
                "supplier_id, warranty_months, active) VALUES "
                "('LAPTOP-STD-14', 'Laptop', 'laptop', '{}', 94900, 'EUR', 1, 36, true), "
                "('DOCK-USB4', 'Dock', 'dock', '{}', 21900, 'EUR', 1, 24, true)"
            )
        )
    again, before, after = migrate(blank_url)
    keep(databases, again)
    assert (before, after) == ("0008", migrations.HEAD)
    assert schema_diff(again) == []
    assert triggers(again) == TRIGGERS[databases.backend]  # the stamp triggers on item too
    with again.connect() as connection:
        rows = connection.execute(text("SELECT sku, holds_data FROM item ORDER BY sku")).all()
    assert [tuple(r) for r in rows] == [("DOCK-USB4", True), ("LAPTOP-STD-14", True)]


def test_a_populated_database_migrates_down_and_up_again_with_its_rows(
    databases: Databases, blank_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`alembic downgrade` as a developer runs it (PROCURE_DATABASE_URL, no connection handed
    over) on a database holding the sample organisation: on SQLite the batch copies of person
    and item used to fail on their foreign keys. Up again with `procure init`'s migrate, the
    rows and the audit chain are as they were."""
    from tests.factories import load_sample

    engine, _, _ = migrate(blank_url)
    keep(databases, engine)
    with transaction(engine) as session:
        load_sample(session)
    before = snapshot(engine)
    engine.dispose()
    monkeypatch.setenv("PROCURE_DATABASE_URL", blank_url)
    command.downgrade(alembic_config(), "0006")
    down = keep(databases, make_engine(blank_url))
    assert revisions(down) == ["0006"]
    columns = {c["name"] for c in inspect(down).get_columns("person")}
    assert "leaves_on" not in columns and "email" in columns  # 0008's column is gone
    down.dispose()
    again, was, now = migrate(blank_url)
    keep(databases, again)
    assert (was, now) == ("0006", migrations.HEAD)
    assert schema_diff(again) == []
    # Every row as it was, but what the dropped column held: 0009 marks every item as holding
    # data again (the sample's dock, monitor and headset said they do not). It is item's last
    # column, added last both times.
    after = snapshot(again)
    items_before, items_after = before["rows"].pop("item"), after["rows"].pop("item")
    assert after == before
    assert [r[:-1] for r in items_after] == [r[:-1] for r in items_before]
    assert {r[-1] for r in items_after} == {True} != {r[-1] for r in items_before}
    with transaction(again, readonly=True) as session:
        assert verify(session).ok


# ------------------------------------------------------------------ open_database


def test_open_database_opens_a_database_at_head(databases: Databases) -> None:
    engine = keep(databases, open_database(databases.url("sample")))
    assert revisions(engine) == [migrations.HEAD]


def test_open_database_refuses_a_database_without_the_schema(blank_url: str) -> None:
    with pytest.raises(InputError) as caught:
        open_database(blank_url)
    (problem,) = caught.value.problems
    assert problem.field == "--db"
    assert problem.message == "the database has no procure schema: run `procure init` first"


def test_open_database_refuses_a_database_at_an_older_revision(
    databases: Databases, blank_url: str
) -> None:
    upgrade_to(blank_url, "0001")
    with pytest.raises(InputError) as caught:
        open_database(blank_url)
    (problem,) = caught.value.problems
    assert problem.field == "--db"
    assert problem.message == (
        f"the database schema is at 0001, this procure needs {migrations.HEAD}: "
        "run `procure init` to upgrade"
    )
    # Following the advice works.
    engine, _, _ = migrate(blank_url)
    keep(databases, engine)
    keep(databases, open_database(blank_url))


def test_a_database_from_a_newer_procure_is_refused_clearly(
    databases: Databases, blank_url: str
) -> None:
    # A revision this procure does not know, as a newer release would leave behind.
    engine, _, _ = migrate(blank_url)
    keep(databases, engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(InputError, match="0099"):
        open_database(blank_url)
    # `procure init` must not crash on it either: a clear refusal naming the revision.
    with pytest.raises(InputError, match="0099"):
        migrate(blank_url)
    assert revisions(engine) == ["0099"]


def test_open_database_refuses_a_missing_sqlite_file_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "procure.db"
    with pytest.raises(InputError) as caught:
        open_database(f"sqlite:///{path}")
    (problem,) = caught.value.problems
    assert problem.message == f"no database at {path}: run `procure init` first"
    assert not path.exists() and not path.parent.exists()


@pytest.mark.postgres
def test_open_database_refuses_a_missing_postgres_database() -> None:
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/procure_missing_{RUN_ID}"
    with pytest.raises(InputError) as caught:
        open_database(url)
    (problem,) = caught.value.problems
    assert problem.field == "--db"
    assert problem.message.startswith("cannot open the database:")
    assert f'database "procure_missing_{RUN_ID}" does not exist' in problem.message


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "not a database URL"),
        ("sqlite//missing-colon.db", "not a database URL"),
        ("mysql://someone@localhost/procure", "no driver for this URL"),
    ],
)
def test_open_database_refuses_a_url_it_cannot_use_with_a_message(url: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        open_database(url)
    (problem,) = caught.value.problems
    assert problem.field == "--db"
    assert message in problem.message
