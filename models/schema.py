"""Every table, imported once so the metadata is complete (for migrations and tests)."""

from sqlmodel import SQLModel

from models import (  # noqa: F401
    assets,
    audit,
    catalog,
    economics,
    links,
    org,
    outbox,
    pipeline,
    reference,
    requests,
)

metadata = SQLModel.metadata
