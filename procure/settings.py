"""Settings: one object, read from PROCURE_* environment variables."""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.errors import InputError, Problem

# Values people paste from examples: never accepted as the signing key.
PLACEHOLDER_KEYS = frozenset({"changeme", "change-me", "secret", "dev", "test", "procure"})
MIN_KEY_LENGTH = 32


class Settings(BaseSettings):
    """Where the data lives, how the clock reads, how notifications go out and links are signed."""

    model_config = SettingsConfigDict(env_prefix="PROCURE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".procure")
    database_url: str | None = None
    # A fixed "now" for rehearsals and tests (ISO 8601 with a time zone); unset in production.
    now: datetime | None = None
    # development: a signing key is generated under PROCURE_HOME; production: it must be set.
    environment: Literal["development", "production"] = "development"
    # Signs approval links. Production reads it from the environment (or a secret store that
    # sets it); never from a file in the repository.
    secret_key: SecretStr | None = None
    # The address people open links at (the approval web app), as they see it.
    base_url: str = "http://127.0.0.1:8000"
    # How long an approval link works after the stage's deadline, in days.
    link_days: int = Field(default=14, ge=1, le=90)
    # The Apprise YAML file that maps teams and people to email, Slack, ... URLs.
    apprise_config: Path | None = None
    # A folder of templates that override the built-in ones, file by file.
    templates_dir: Path | None = None
    # The bearer token of the HTTP API (unset: the API answers 401 to everything but health).
    api_token: SecretStr | None = None
    # Delivery: failed sends are retried with back-off this many times, then the row is dead.
    max_attempts: int = Field(default=6, ge=1, le=50)

    @field_validator("now")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-11-25T09:00:00+01:00")
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")) or " " in value:
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. https://procure.example.com")
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 (reading it checks it)
        except ValueError:
            raise ValueError(f"{value!r} has a port that is not a number from 0 to 65535") from None
        if parts.username is not None or parts.password is not None:
            # Every link would carry them to everyone it is sent to; never echo them back.
            host = parts.netloc.rpartition("@")[2]
            raise ValueError(
                f"'{parts.scheme}://…@{host}{parts.path}' holds a user name or password: links "
                "carry it to everyone they are sent to; give the address without it"
            )
        if not parts.hostname:
            raise ValueError(f"{value!r} names no host, e.g. https://procure.example.com")
        if parts.query or parts.fragment or value.endswith(("?", "#")):
            raise ValueError(
                f"{value!r} has a query or a fragment: links are the address followed by their "
                "own path, so give it without '?' or '#', e.g. https://procure.example.com/approvals"
            )
        return value

    @property
    def db_url(self) -> str:
        """The database URL: PROCURE_DATABASE_URL, else a SQLite file under PROCURE_HOME."""
        return self.database_url or f"sqlite:///{self.home.expanduser() / 'procure.db'}"

    def signing_key(self) -> bytes:
        """The key approval links are signed with.

        Set PROCURE_SECRET_KEY (at least 32 characters). In development an unset key is
        generated once into PROCURE_HOME/secret.key (readable by its owner only)."""
        if self.secret_key is not None:
            key = self.secret_key.get_secret_value()
            if key.strip().lower() in PLACEHOLDER_KEYS or len(key.strip()) < MIN_KEY_LENGTH:
                raise InputError(
                    Problem(
                        f"too weak: use at least {MIN_KEY_LENGTH} random characters, e.g. "
                        "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                        field="PROCURE_SECRET_KEY",
                    )
                )
            return key.encode()
        if self.environment == "production":
            raise InputError(
                Problem(
                    "is not set: production signs approval links with a key of its own",
                    field="PROCURE_SECRET_KEY",
                )
            )
        path = self.home.expanduser() / "secret.key"
        if not path.exists():
            # Written aside, then linked into place: two processes starting at once agree.
            path.parent.mkdir(parents=True, exist_ok=True)
            aside = path.with_name(f".secret.key.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            finally:
                aside.unlink()
        return path.read_text().strip().encode()


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
