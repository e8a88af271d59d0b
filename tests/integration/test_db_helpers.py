"""models/db.py's row helpers on both databases: by_id() answers as session.get() would;
insert_all() writes many rows in one INSERT and gives each its own id."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine

from models.assets import Asset
from models.db import by_id, insert_all, transaction
from models.org import Person
from models.requests import Request, RequestLine
from tests.factories import NOW, RITA, submit


def test_by_id_answers_as_session_get_does(engine: Engine) -> None:
    ref = submit(engine)
    request_id = int(ref[3:])
    with transaction(engine) as session:
        found = by_id(session, Request, request_id)
        assert found is not None and found.ref == ref
        assert by_id(session, Request, request_id) is found  # the session's own object
        assert by_id(session, Request, 999_999) is None
        person = by_id(session, Person, found.requester_id)
        assert person is not None and person.email == RITA
        # Expired (as after session.expire): read again, seeing what the database holds now.
        session.execute(
            text("UPDATE request SET justification = 'changed' WHERE id = :id"), {"id": request_id}
        )
        session.expire(found)
        again = by_id(session, Request, request_id)
        assert again is found and again.justification == "changed"
        session.rollback()
    with transaction(engine) as session:
        session.execute(
            text(
                "INSERT INTO person (email, name, department, active) "
                "VALUES ('gone@example.com', 'Gone', 'IT', true)"
            )
        )
        gone_id = session.execute(
            text("SELECT id FROM person WHERE email = 'gone@example.com'")
        ).scalar_one()
        gone = by_id(session, Person, gone_id)
        assert gone is not None and gone.name == "Gone"
        session.expire(gone)
        # Its row deleted meanwhile (outside the ORM): None, as session.get() answers.
        session.execute(text("DELETE FROM person WHERE id = :id"), {"id": gone_id})
        assert by_id(session, Person, gone_id) is None
        session.rollback()


def _line(request_id: int, line_no: int, quantity: int) -> RequestLine:
    return RequestLine(
        request_id=request_id,
        line_no=line_no,
        item_id=1,
        sku="LAPTOP-14",
        quantity=quantity,
        unit_price=Decimal("1000.00"),
        total=Decimal(1000 * quantity).quantize(Decimal("0.01")),
    )


def test_insert_all_writes_the_rows_in_one_insert_each_with_its_own_id(engine: Engine) -> None:
    request_id = int(submit(engine)[3:])
    inserts: list[str] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda _c, _cu, statement, *_a: (
            inserts.append(statement) if statement.startswith("INSERT INTO request_line") else None
        ),
    )
    # Given out of order: each row's id is matched by its key, not by position.
    rows = [_line(request_id, number, quantity) for number, quantity in ((12, 3), (10, 1), (11, 2))]
    with transaction(engine) as session:
        insert_all(session, rows, key=["line_no"])
        assert len(inserts) == 1
        assert all(row in session for row in rows)  # joined the session as rows it has read
        assert not session.dirty and not session.new
    with transaction(engine) as session:
        for row in rows:
            stored = session.get(RequestLine, row.id)
            assert stored is not None
            assert (stored.line_no, stored.quantity) == (row.line_no, row.quantity)
            # Left unset, a column's default is written.
            assert (stored.ownership, stored.sourcing, stored.sourcing_note) == (
                "bought",
                "individual",
                "",
            )


def test_insert_all_without_a_key_only_writes_and_refuses_rows_sharing_a_key(
    engine: Engine,
) -> None:
    request_id = int(submit(engine)[3:])
    with transaction(engine) as session:
        line_id = session.execute(
            select(RequestLine.id).where(RequestLine.request_id == request_id)  # type: ignore[arg-type]
        ).scalar_one()
        assets = [
            Asset(request_id=request_id, line_id=line_id, item_id=1, sku="X", ordered_at=NOW)
            for _ in range(3)
        ]
        insert_all(session, assets, key=None)
        assert all(asset.id is None and asset not in session for asset in assets)
        count = session.execute(
            text("SELECT count(*) FROM asset WHERE request_id = :id"), {"id": request_id}
        ).scalar_one()
        assert count == 3
        twins = [_line(request_id, 20, 1), _line(request_id, 20, 2)]
        with pytest.raises(ValueError, match=r"request_line: rows to insert share a key"):
            insert_all(session, twins, key=["line_no"])
        session.rollback()
