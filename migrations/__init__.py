"""Alembic migrations of the procure schema; HEAD is the revision this code needs."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
# Every revision in order (tests check this against the scripts in versions/).
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009")
HEAD = REVISIONS[-1]
