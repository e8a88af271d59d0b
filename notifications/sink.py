"""A local SMTP server that keeps what it receives: the demo's outbox and the tests' mail server.

`MailSink` runs aiosmtpd on loopback. Every message is kept (parsed) and, with a folder, written
there as `NNN-recipient.eml` (open it in any mail program) and `NNN-recipient.html` (its HTML
part, for a browser). It can refuse chosen recipients or answer slowly, to rehearse failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    at: float = 0.0  # time.monotonic() when the server accepted it

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, subtype: str) -> str:
        """The text of the text/plain or text/html part."""
        body = self.message.get_body(preferencelist=(subtype,))
        if body is None:
            raise KeyError(f"no text/{subtype} part in {self.subject!r}")
        return str(body.get_content())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Handler:
    def __init__(self, sink: MailSink):
        self.sink = sink

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.lower() in self.sink.refuse:
            return self.sink.refuse[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        if self.sink.down_with:
            return self.sink.down_with
        self.sink.keep(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content))
        return "250 Message accepted"


class MailSink:
    """aiosmtpd on 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(self, folder: Path | None = None, *, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.received: list[Received] = []
        self.refuse: dict[str, str] = {}  # address -> SMTP reply, e.g. "550 no such user"
        self.delay: float = 0.0  # seconds to wait before answering DATA (a hanging server)
        self.down_with: str | None = None  # e.g. "451 try again later" for every message
        self._lock = threading.Lock()
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, ready_timeout=10
        )

    @property
    def url(self) -> str:
        """An Apprise URL that sends through this sink (add `&to=` for a fixed recipient)."""
        return f"mailto://127.0.0.1:{self.port}?from=procure@example.com&name=procure&cto=5"

    def routes(self, teams: tuple[str, ...] | None = None) -> str:
        """An Apprise YAML routes file sending every person, and each team at
        TEAM@example.com (every team a notification goes to, unless `teams` names some), to
        this sink."""
        if teams is None:
            from notifications.routing import TEAMS  # imports Apprise: only when asked

            teams = TEAMS
        return f'version: 1\nurls:\n  - "{self.url}":\n      - tag: people\n' + "".join(
            f'  - "{self.url}&to={t}@example.com":\n      - tag: {t}\n' for t in teams
        )

    def keep(self, sender: str, recipients: tuple[str, ...], raw: bytes) -> None:
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        item = Received(sender, recipients, message, raw, time.monotonic())
        with self._lock:
            self.received.append(item)
            number = len(self.received)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            who = re.sub(r"[^a-z0-9.@-]+", "_", ",".join(recipients).lower())[:80]
            stem = f"{number:03d}-{who}"
            (self.folder / f"{stem}.eml").write_bytes(raw)
            with contextlib.suppress(KeyError):  # a message without HTML has no .html copy
                (self.folder / f"{stem}.html").write_text(item.part("html"))

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if address in r.recipients]

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
