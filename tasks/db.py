"""The database, from the task side: one engine per process, a transaction per task body."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy.engine import Engine
from sqlmodel import Session

from models.db import make_engine, transaction
from procure import failpoints


def database_url() -> str:
    """The database of this installation (PROCURE_DATABASE_URL; never passed as a parameter,
    so a password in it stays out of flow parameters, logs and the Prefect UI)."""
    from procure import settings

    return settings.load().db_url


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    return make_engine(url)


def engine() -> Engine:
    return _engine(database_url())


@contextmanager
def write() -> Iterator[Session]:
    """A task's unit of work (one request of a batch): committed when the block ends."""
    with transaction(engine()) as session:
        yield session
    failpoints.hit("after-commit")  # committed, the task not yet done (a crash rehearsal)


@contextmanager
def read() -> Iterator[Session]:
    with transaction(engine(), readonly=True) as session:
        yield session
