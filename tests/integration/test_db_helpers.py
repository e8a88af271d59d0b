"""models/db.py's row helpers on both databases: by_id() answers as session.get() would."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

from models.db import by_id, transaction
from models.org import Person
from models.requests import Request
from tests.factories import RITA, submit


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
