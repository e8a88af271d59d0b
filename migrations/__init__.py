"""Alembic migrations of the procure schema; HEAD is the revision this code needs."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
HEAD = "0002"
