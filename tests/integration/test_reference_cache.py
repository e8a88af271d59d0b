"""Reference data kept across transactions (models/reference.py): read once, then answered
from the cache until the database's stamp changes; every change is seen, whoever makes it."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import bindparam, event, insert, text
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from models import actions, reference
from models.catalog import Item
from models.db import add_unless_taken, by_id, transaction
from models.errors import InputError
from models.org import PERSON_BY_EMAIL, ROLES_OF, Person
from models.reference import REFERENCE_TABLES
from models.requests import Decision
from tests.factories import IDA, PAUL, RITA, decide, show, submit


@contextmanager
def reads(engine: Engine) -> Iterator[Counter[str]]:
    """The tables the engine sends SELECTs to while the block runs, counted."""
    seen: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            found = re.search(r"\bFROM\s+(\w+)", statement)
            seen[found.group(1) if found else "?"] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def stamp(engine: Engine) -> str:
    with engine.connect() as connection:
        return str(connection.execute(text("SELECT stamp FROM reference_version")).scalar_one())


def name_of(engine: Engine, email: str) -> str:
    with transaction(engine, readonly=True) as session:
        person = session.exec(PERSON_BY_EMAIL, params={"email": email}).one()
        return person.name


def test_a_second_submission_reads_no_reference_table(engine: Engine) -> None:
    submit(engine, justification="first")  # fills the cache
    with reads(engine) as first:
        submit(engine, justification="second")
    assert first["reference_version"] == 1  # the stamp, once per transaction
    assert not {t for t in first if t in REFERENCE_TABLES}, first
    assert first["request"] >= 1  # the request's own rows still come from the database
    with transaction(engine, readonly=True) as session:
        hits, misses = reference.stats(session)
    assert hits > 0 and misses > 0


def test_every_reference_table_change_gives_a_new_stamp(engine: Engine) -> None:
    """The trigger on each table, whatever writes: here plain SQL, as an administrator's."""
    changed = []
    for table in sorted(REFERENCE_TABLES):
        before = stamp(engine)
        with engine.begin() as connection:
            connection.execute(text(f"UPDATE {table} SET {_key(table)} = {_key(table)}"))
            rows = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
        if rows:
            assert stamp(engine) != before, table
            changed.append(table)
    # The sample organisation and catalog fill most of them (a SQLite trigger fires per row).
    assert {"person", "person_role", "cost_centre", "item", "supplier", "pipeline_version"} <= set(
        changed
    )


def _key(table: str) -> str:
    return {"person_role": "role", "bundle_item": "quantity", "agreement_price": "unit_price"}.get(
        table, "id"
    )


def test_a_change_made_outside_procure_is_seen_by_the_next_transaction(engine: Engine) -> None:
    submit(engine)
    assert name_of(engine, RITA) != "Rita Renamed"
    with engine.begin() as connection:  # another program, straight SQL
        connection.execute(
            text("UPDATE person SET name = 'Rita Renamed' WHERE email = :e"), {"e": RITA}
        )
    assert name_of(engine, RITA) == "Rita Renamed"
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE person SET active = :no WHERE email = :e"), {"no": False, "e": RITA}
        )
    with pytest.raises(InputError, match="no longer active"):
        submit(engine, justification="after she left")


def test_a_new_list_price_prices_the_next_request(engine: Engine) -> None:
    ref = submit(engine, lines=[{"sku": "MON-27", "quantity": 1}])
    before = Decimal(show(engine, ref)["lines"][0]["unit_price"])
    with transaction(engine) as session:
        item = session.exec(select(Item).where(Item.sku == "MON-27")).one()
        item.list_price = before + 100
    again = submit(engine, lines=[{"sku": "MON-27", "quantity": 1}], justification="later")
    assert Decimal(show(engine, again)["lines"][0]["unit_price"]) == before + 100


def test_a_transaction_reads_its_own_changes_to_reference_data(engine: Engine) -> None:
    name_of(engine, IDA)  # cached
    with transaction(engine) as session:
        ida = session.exec(PERSON_BY_EMAIL, params={"email": IDA}).one()
        ida.name = "Ida Changed"
        session.flush()
        session.expunge(ida)  # the next read must come from the database, not the identity map
        with reads(engine) as seen:
            again = session.exec(PERSON_BY_EMAIL, params={"email": IDA}).one()
        assert again.name == "Ida Changed"
        assert seen["person"] == 1
        session.rollback()
    assert name_of(engine, IDA) != "Ida Changed"


def test_an_unflushed_change_is_never_overwritten_by_the_cache(engine: Engine) -> None:
    name_of(engine, IDA)
    with transaction(engine) as session:
        ida = session.exec(PERSON_BY_EMAIL, params={"email": IDA}).one()
        with session.no_autoflush:
            ida.name = "Ida Pending"
            again = session.exec(PERSON_BY_EMAIL, params={"email": IDA}).one()
        assert again is ida and again.name == "Ida Pending"
        session.rollback()


def test_changing_an_object_from_the_cache_changes_only_that_sessions_copy(engine: Engine) -> None:
    with engine.connect() as connection:
        original = connection.execute(
            text("SELECT name FROM person WHERE email = :e"), {"e": IDA}
        ).scalar_one()

    def scribble(session: Any) -> Person:
        person = session.exec(PERSON_BY_EMAIL, params={"email": IDA}).one()
        item = session.exec(select(Item).where(Item.sku == "LAPTOP-STD-14")).one()
        person.name = "Scribbled"
        item.specs["scribbled"] = True  # a JSON column changed in place
        return person

    # The session that fills the cache, then one answered from it: both change their objects
    # and never write them.
    with transaction(engine, readonly=True) as one, transaction(engine, readonly=True) as two:
        first = scribble(one)
        second = scribble(two)
        assert first is not second
    with transaction(engine, readonly=True) as three:
        person = three.exec(PERSON_BY_EMAIL, params={"email": IDA}).one()
        item = three.exec(select(Item).where(Item.sku == "LAPTOP-STD-14")).one()
        assert person.name == original and "scribbled" not in item.specs
        assert reference.stats(three)[0] >= 4  # the second and third answered from the cache


def test_shared_rows_are_read_once_and_handed_out_as_they_are(engine: Engine) -> None:
    """reference.shared(): for callers that only read (who holds a role, a requester's address),
    the same detached rows for every transaction under one stamp, no query on a hit."""
    with transaction(engine, readonly=True) as session:
        (first,) = reference.shared(session, PERSON_BY_EMAIL, {"email": IDA})
        assert first in session  # the reading transaction keeps its own row
    with transaction(engine, readonly=True) as session, reads(engine) as seen:
        (second,) = reference.shared(session, PERSON_BY_EMAIL, {"email": IDA})
        (third,) = reference.shared(session, PERSON_BY_EMAIL, {"email": IDA})
        assert by_id(session, Person, second.id or 0, read_only=True) is not None
    with transaction(engine, readonly=True) as session:
        (fourth,) = reference.shared(session, PERSON_BY_EMAIL, {"email": IDA})
    assert second is third is fourth  # one row, shared
    assert second not in session and second.email == IDA and second.name == first.name
    assert seen["reference_version"] == 1 and seen["person"] == 1  # by_id's first read
    # A column's values come back as they are; several columns as tuples, unpacked as rows.
    with transaction(engine, readonly=True) as session:
        reference.shared(session, ROLES_OF, {"person_id": second.id})  # read: kept
    with transaction(engine, readonly=True) as session:
        roles = reference.shared(session, ROLES_OF, {"person_id": second.id})
        roles.append("scribbled")  # the list is the caller's: the cache's answer is not changed
        assert "scribbled" not in reference.shared(session, ROLES_OF, {"person_id": second.id})
        roles.pop()
        ((email, name),) = reference.shared(session, _NAME_OF, {"email": IDA})
        ((again, _),) = reference.shared(session, _NAME_OF, {"email": IDA})
    assert roles and all(isinstance(role, str) for role in roles)
    assert (email, name, again) == (IDA, first.name, IDA)


_NAME_OF = sa_select(col(Person.email), col(Person.name)).where(
    col(Person.email) == bindparam("email")
)


def test_shared_rows_follow_every_change_and_a_writing_transaction_reads_its_own(
    engine: Engine,
) -> None:
    def shared_name() -> str:
        with transaction(engine, readonly=True) as session:
            return str(reference.shared(session, PERSON_BY_EMAIL, {"email": IDA})[0].name)

    before = shared_name()
    with engine.begin() as connection:  # another program, straight SQL: a new stamp
        connection.execute(
            text("UPDATE person SET name = 'Ida Outside' WHERE email = :e"), {"e": IDA}
        )
    assert shared_name() == "Ida Outside" != before
    with transaction(engine) as session:
        ida = session.exec(PERSON_BY_EMAIL, params={"email": IDA}).one()
        ida.name = "Ida Waiting"  # not flushed yet: shared() must not answer past it
        (seen,) = reference.shared(session, PERSON_BY_EMAIL, {"email": IDA})
        assert seen is ida and seen.name == "Ida Waiting"
        session.rollback()
    assert shared_name() == "Ida Outside"


def test_locking_reads_and_mixed_queries_go_to_the_database(engine: Engine) -> None:
    ref = submit(engine)
    decide(engine, ref, IDA)
    # People who decided something: a reference table filtered through one that is not.
    deciders = select(Person).where(col(Person.id).in_(select(Decision.actor_id)))
    for _ in range(2):  # the second time too: nothing of it was kept
        with transaction(engine) as session, reads(engine) as seen:
            session.exec(select(Person).where(Person.email == RITA).with_for_update()).one()
            assert [p.email for p in session.exec(deciders).all()] == [IDA]
            actions.get_request(session, ref)
        assert seen["person"] == 2 and seen["request"] == 1
    with transaction(engine) as session, reads(engine) as seen:
        session.exec(text("SELECT count(*) FROM person")).one()  # SQL it cannot see into
        session.exec(PERSON_BY_EMAIL, params={"email": RITA}).one()  # then from the database
    assert seen["person"] == 2


def test_a_database_without_the_stamp_row_is_not_cached(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM reference_version"))
    name_of(engine, IDA)
    with reads(engine) as seen:
        name_of(engine, IDA)
    assert seen["person"] == 1


def test_two_writers_of_reference_data_queue_instead_of_deadlocking(engine: Engine) -> None:
    """Each changes two people in the opposite order. The stamp's lock is taken before the
    first reference row is (PostgreSQL: a BEFORE STATEMENT trigger; SQLite: one writer at a
    time), so the second waits for the first instead of both waiting for each other."""
    first_holds_ida = threading.Event()
    failures: list[BaseException] = []
    rename = text("UPDATE person SET name = name || '.' WHERE email = :e")

    def writer(order: tuple[str, str], wait: threading.Event | None) -> None:
        try:
            if wait is not None:
                wait.wait(timeout=30)
            with engine.begin() as connection:
                connection.execute(rename, {"e": order[0]})
                if wait is None:
                    first_holds_ida.set()
                    time.sleep(0.5)  # the other writer starts meanwhile and queues
                connection.execute(rename, {"e": order[1]})
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=writer, args=((IDA, PAUL), None)),
        threading.Thread(target=writer, args=((PAUL, IDA), first_holds_ida)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert name_of(engine, IDA).endswith("..") and name_of(engine, PAUL).endswith("..")


def test_a_bulk_insert_in_the_transaction_is_seen_by_its_next_read(engine: Engine) -> None:
    """ "Nobody has this email" is an answer the cache keeps too; an INSERT in the same
    transaction (the bulk path of an organisation load) must not be hidden by it."""
    newcomer = "nora.new@example.com"
    with transaction(engine, readonly=True) as session:
        assert session.exec(PERSON_BY_EMAIL, params={"email": newcomer}).first() is None
    with transaction(engine) as session:
        assert session.exec(PERSON_BY_EMAIL, params={"email": newcomer}).first() is None
        session.execute(insert(Person).values(email=newcomer, name="Nora New"))
        found = session.exec(PERSON_BY_EMAIL, params={"email": newcomer}).first()
        assert found is not None and found.name == "Nora New"
    assert name_of(engine, newcomer) == "Nora New"


def test_a_row_added_past_the_orm_is_seen_by_the_transactions_next_read(engine: Engine) -> None:
    """add_unless_taken() writes on the session's connection, where the cache's hooks do not
    look: a reference row it adds must still end the cached answers for that transaction."""
    newcomer = "nina.next@example.com"
    with transaction(engine) as session:
        assert session.exec(PERSON_BY_EMAIL, params={"email": newcomer}).first() is None
        assert add_unless_taken(session, Person(email=newcomer, name="Nina Next"), ["email"])
        session.expunge_all()  # the added object gone: the answer must come from the database
        found = session.exec(PERSON_BY_EMAIL, params={"email": newcomer}).first()
        assert found is not None and found.name == "Nina Next"
    assert name_of(engine, newcomer) == "Nina Next"
