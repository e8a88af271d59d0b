"""A database with requests in every state, and a snapshot that proves bad input wrote nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from models import actions
from models.assets import SerialIn
from models.db import make_engine, transaction
from tests.factories import IDA, NOW, PAUL, approve_all, decide, submit


@dataclass
class World:
    """Requests in the states bad input is tried against (nothing may change them)."""

    url: str
    engine: Engine
    refs: dict[str, str]

    @property
    def ordered(
        self,
    ) -> str:  # LAPTOP-STD-14 x1 + MON-27 x2, ordered, no delivery date; key hr-4711
        return self.refs["ordered"]

    @property
    def delivered(self) -> str:  # LAPTOP-STD-14 x1, delivered as SN-D-1, not yet handed out
        return self.refs["delivered"]

    @property
    def deployed(self) -> str:  # LAPTOP-STD-14 x1, SN-P-1 handed to Nina
        return self.refs["deployed"]

    @property
    def returned(self) -> str:  # LAPTOP-STD-14 x2: SN-R-1 erased (certificate C-1), SN-R-2 back
        return self.refs["returned"]

    @property
    def in_review(self) -> str:
        return self.refs["in_review"]

    @property
    def sent_back(self) -> str:
        return self.refs["sent_back"]


def _ordered(engine: Engine, **overrides: Any) -> str:
    ref = submit(engine, **overrides)
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    return ref


def _delivered(engine: Engine, serials: list[str], **overrides: Any) -> str:
    ref = _ordered(engine, **overrides)
    with transaction(engine) as session:
        actions.deliver(session, ref=ref, units=[SerialIn(s) for s in serials], now=NOW)
    return ref


def build_world(url: str, engine: Engine) -> World:
    laptops = [{"sku": "LAPTOP-STD-14", "quantity": 2}]
    refs = {
        "ordered": _ordered(
            engine,
            idempotency_key="hr-4711",
            justification="World: ordered.",
            lines=[{"sku": "LAPTOP-STD-14", "quantity": 1}, {"sku": "MON-27", "quantity": 2}],
        ),
        "delivered": _delivered(engine, ["SN-D-1"], justification="World: delivered."),
        "deployed": _delivered(engine, ["SN-P-1"], justification="World: deployed."),
        "returned": _delivered(
            engine, ["SN-R-1", "SN-R-2"], justification="World: back.", lines=laptops
        ),
    }
    for key in ("deployed", "returned"):
        with transaction(engine) as session:
            actions.roll_out(session, ref=refs[key], now=NOW)
    for serial in ("SN-R-1", "SN-R-2"):
        with transaction(engine) as session:
            actions.receive_return(session, serial=serial, now=NOW)
    with transaction(engine) as session:
        actions.erase(
            session,
            serial="SN-R-1",
            certificate="C-1",
            method="NIST 800-88 purge",
            provider="DaaS Company",
            now=NOW,
        )
    refs["in_review"] = submit(engine, justification="World: in review.")
    refs["sent_back"] = submit(engine, justification="World: sent back.")
    decide(engine, refs["sent_back"], IDA, "send_back", comment="Use the standard laptop.")
    return World(url, engine, refs)


def world_fixture() -> Any:
    """A module-scoped fixture: one World per backend, shared by the module's tests."""

    @pytest.fixture(
        scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
    )
    def world(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[World]:
        from tests.conftest import Databases

        dbs = Databases(request.param, request, tmp_path_factory.mktemp("world"))
        try:
            url = dbs.url("sample")
            engine = make_engine(url)
            dbs.engines.append(engine)
            yield build_world(url, engine)
        finally:
            dbs.close()

    return world


COUNTED = (
    "request",
    "request_line",
    "stage",
    "decision",
    "asset",
    "erasure_record",
    "audit_event",
    "notification",
    "person",
    "person_role",
    "cost_centre",
    "delegation",
    "supplier",
    "item",
    "pipeline_version",
)
DETAILS = {
    "requests": "SELECT id, status, version, round, total, needed_by, delivery_on, justification"
    " FROM request ORDER BY id",
    "stages": "SELECT id, status, version, round FROM stage ORDER BY id",
    "assets": "SELECT id, serial, status, version, assigned_to_id FROM asset ORDER BY id",
    "people": "SELECT email, name, department, active FROM person ORDER BY email",
    "items": "SELECT sku, name, list_price, currency, supplier_id FROM item ORDER BY sku",
    "pipelines": "SELECT id, active FROM pipeline_version ORDER BY id",
    "audit_head": "SELECT seq, hash FROM audit_head",
}


def snapshot(engine: Engine) -> dict[str, Any]:
    """What bad input must not change: row counts, statuses, names, prices, the audit head."""
    with engine.execution_options(procure_readonly=True).connect() as connection:
        state: dict[str, Any] = {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in COUNTED
        }
        for name, query in DETAILS.items():
            state[name] = [tuple(row) for row in connection.execute(text(query)).all()]
    return state


@contextmanager
def writes_nothing(engine: Engine) -> Iterator[None]:
    before = snapshot(engine)
    yield
    after = snapshot(engine)
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, f"bad input changed the database: {changed}"
