"""Settings: one object, read from PROCURE_* environment variables."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.errors import InputError, Problem


class Settings(BaseSettings):
    """Where the data lives and how the clock reads (PROCURE_HOME, PROCURE_DATABASE_URL, PROCURE_NOW)."""

    model_config = SettingsConfigDict(env_prefix="PROCURE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".procure")
    database_url: str | None = None
    # A fixed "now" for rehearsals and tests (ISO 8601 with a time zone); unset in production.
    now: datetime | None = None

    @field_validator("now")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-11-25T09:00:00+01:00")
        return value

    @property
    def db_url(self) -> str:
        """The database URL: PROCURE_DATABASE_URL, else a SQLite file under PROCURE_HOME."""
        return self.database_url or f"sqlite:///{self.home.expanduser() / 'procure.db'}"


def load(**overrides: object) -> Settings:
    """Read the settings; a bad value is named with its environment variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            Problem(
                str(e["msg"]).removeprefix("Value error, "),
                field="PROCURE_" + "_".join(str(p) for p in e["loc"]).upper(),
            )
            for e in exc.errors()
        ]
        raise InputError(problems) from None
