"""Every table, imported once so the metadata is complete (for migrations and tests)."""

from sqlmodel import SQLModel

from models import assets, audit, catalog, economics, org, outbox, pipeline, requests  # noqa: F401

metadata = SQLModel.metadata
