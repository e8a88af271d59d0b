"""Sending one rendered message to one destination.

Email is built and sent here (not by Apprise's email plugin): a multipart message whose text
part keeps every link, an HTML part, attachments, a Message-ID that stays the same on a retry,
and one SMTP connection per server and worker thread, reused for the whole run (Apprise opens
one per message and manages about 40 a second here). The server settings come from the route's
Apprise `mailto://` / `mailtos://` URL, so the routes file stays Apprise's format.

Slack goes through Apprise's Slack plugin as a Block Kit message with link buttons; any other
Apprise service gets the subject and the plain text (links included).
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any

import apprise

from notifications.render import Message
from notifications.routing import Target, instantiate

log = logging.getLogger("procure.notify")

SLACK_TEMPLATES = Path(__file__).resolve().parent / "slack"
SLACK_TEXT_MAX = 2900  # a Block Kit section holds 3,000 characters
SLACK_TITLE_MAX = 150  # a header block holds 150


class DeliveryError(Exception):
    """A destination did not take the message; the text says why (no secrets)."""


@dataclass(frozen=True)
class Envelope:
    """What a transport needs besides the message: who it is about, for headers and threading."""

    notification_id: int
    request_id: str | None  # "PR-0042"
    recipient_name: str | None
    at: datetime
    queued_at: datetime | None = None  # when the notification was queued (stable on retries)
    request_created: datetime | None = None  # when the request was created (its thread's mark)


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    mode: str  # insecure, starttls, ssl
    user: str | None
    password: str | None = field(repr=False)
    timeout: float
    verify: bool
    sender: tuple[str, str]  # (name, address)

    @property
    def key(self) -> tuple[str, int, str, str | None]:
        return (self.host, self.port, self.mode, self.user)

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


def smtp_server(plugin: Any) -> SmtpServer:
    """The server settings of an Apprise email plugin."""
    name, address = plugin.from_addr
    return SmtpServer(
        host=plugin.smtp_host,
        port=int(plugin.port),
        mode=str(plugin.secure_mode),
        user=plugin.user or None,
        password=plugin.password or None,
        timeout=float(plugin.socket_connect_timeout or 15),
        verify=bool(plugin.verify_certificate),
        sender=(name or "procure", address),
    )


def message_id(envelope: Envelope, target: Target, domain: str) -> str:
    """The same on every retry, so a receiving system can drop a duplicate; and another for
    another installation's notification of the same number (a staging and a production
    database, or one made anew), which mail stores would otherwise drop as a duplicate: the
    time it was queued goes into the digest."""
    queued = envelope.queued_at.isoformat() if envelope.queued_at else ""
    digest = hashlib.sha256(f"{target.key}|{queued}".encode()).hexdigest()[:16]
    return f"<procure.{envelope.notification_id}.{digest}@{domain}>"


def thread_id(envelope: Envelope, domain: str) -> str | None:
    """The thread every message about one request joins (In-Reply-To, References): the same
    for all of them, and another for another installation's request of the same number (a
    staging and a production database, or one made anew), whose messages mail clients would
    otherwise thread together: the time the request was created goes into the digest."""
    if not envelope.request_id:
        return None
    created = envelope.request_created.isoformat() if envelope.request_created else ""
    digest = hashlib.sha256(f"{envelope.request_id}|{created}".encode()).hexdigest()[:12]
    return f"<procure.{envelope.request_id.lower()}.{digest}@{domain}>"


def build_email(
    message: Message, *, sender: tuple[str, str], to: str, envelope: Envelope, target: Target
) -> EmailMessage:
    """A multipart email: text (with every link), HTML, then attachments."""
    domain = sender[1].rpartition("@")[2] or "procure.invalid"
    mail = EmailMessage(policy=SMTP)
    mail["From"] = formataddr(sender)
    mail["To"] = formataddr((envelope.recipient_name or "", to))
    mail["Subject"] = message.subject
    mail["Date"] = format_datetime(envelope.at)
    mail["Message-ID"] = message_id(envelope, target, domain)
    thread = thread_id(envelope, domain)
    if thread is not None:
        # Every message about one request threads together in a mail client.
        mail["In-Reply-To"] = thread
        mail["References"] = thread
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Auto-Response-Suppress"] = "All"
    mail["X-Procure-Event"] = message.event
    mail.set_content(message.text, cte="quoted-printable")
    mail.add_alternative(message.html, subtype="html", cte="quoted-printable")
    for item in message.attachments:
        maintype, _, subtype = item.content_type.partition("/")
        mail.add_attachment(
            item.data, maintype=maintype, subtype=subtype or "octet-stream", filename=item.filename
        )
    return mail


class SmtpPool:
    """SMTP connections per worker thread and server, reused across messages; a server that
    cannot be reached is not tried again in the same run (its messages fail fast, to be retried
    by the next run)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[smtplib.SMTP] = []
        self.down: dict[tuple[str, int, str, str | None], str] = {}

    def _connect(self, server: SmtpServer) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if not server.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn: smtplib.SMTP
        if server.mode == "ssl":
            conn = smtplib.SMTP_SSL(
                server.host, server.port, timeout=server.timeout, context=context
            )
        else:
            conn = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
        try:
            if server.mode == "starttls":
                conn.starttls(context=context)
            if server.user and server.password:
                conn.login(server.user, server.password)
        except BaseException:
            _close(conn)
            raise
        with self._lock:
            self._open.append(conn)
        return conn

    def _connection(self, server: SmtpServer) -> smtplib.SMTP:
        conns: dict[Any, smtplib.SMTP] = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(server.key)
        if conn is None:
            conn = conns[server.key] = self._connect(server)
        return conn

    def _drop(self, server: SmtpServer) -> None:
        conns: dict[Any, smtplib.SMTP] = self._local.__dict__.setdefault("conns", {})
        conn = conns.pop(server.key, None)
        if conn is not None:
            _close(conn)

    def send(self, server: SmtpServer, mail: EmailMessage, to: str) -> None:
        """Deliver one message to one address, or raise DeliveryError saying why."""
        if server.key in self.down:
            raise DeliveryError(
                f"not tried: {server.label} failed earlier in this run ({self.down[server.key]})"
            )
        data = mail.as_bytes()
        for attempt in (1, 2):
            try:
                conn = self._connection(server)
            except (OSError, smtplib.SMTPException) as exc:
                reason = _describe(exc)
                self.down[server.key] = reason
                raise DeliveryError(f"cannot reach {server.label}: {reason}") from None
            try:
                refused = conn.sendmail(server.sender[1], [to], data)
            except smtplib.SMTPServerDisconnected as exc:
                self._drop(server)  # a reused connection the server closed: once more, fresh
                if attempt == 1:
                    continue
                raise DeliveryError(f"{server.label} closed the connection: {exc}") from None
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                raise DeliveryError(f"{server.label} refused {to}: {code} {_text(text)}") from None
            except smtplib.SMTPResponseException as exc:
                self._drop(server)
                raise DeliveryError(
                    f"{server.label} did not take it: {exc.smtp_code} {_text(exc.smtp_error)}"
                ) from None
            except (OSError, smtplib.SMTPException) as exc:
                self._drop(server)
                reason = _describe(exc)
                if isinstance(exc, (TimeoutError, socket.timeout)):
                    self.down[server.key] = reason
                raise DeliveryError(f"{server.label}: {reason}") from None
            if refused:
                code, text = refused[to]
                raise DeliveryError(f"{server.label} refused {to}: {code} {_text(text)}")
            return

    def close(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            _close(conn)


def _close(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        conn.close()


def _text(value: bytes | str) -> str:
    return (value.decode(errors="replace") if isinstance(value, bytes) else value).strip()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"login refused ({exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------ Slack and the rest

_apprise_lock = threading.Lock()  # Apprise's log capture is process-wide


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def slack_send(message: Message, target: Target) -> None:
    """A Block Kit message: the subject as header, the Slack text, link buttons."""
    links = {b.label: b.url for b in message.buttons}
    if "Approve" in links:
        template = "approval.json"
        tokens = {
            "approve": links["Approve"],
            "reject": links["Reject"],
            "send_back": links["Send back"],
            "open": links.get("Open request", links["Approve"]),
        }
    elif "Confirm receipt" in links:
        template = "receipt.json"
        tokens = {
            "receipt": links["Confirm receipt"],
            "open": links.get("Open request", links["Confirm receipt"]),
        }
    elif "Open request" in links:
        template, tokens = "link.json", {"open": links["Open request"]}
    else:
        template, tokens = "plain.json", {}
    plugin = instantiate(
        target.route.url,
        template=str(SLACK_TEMPLATES / template),
        **{f":{k}": v for k, v in tokens.items()},
    )
    if plugin is None:
        raise DeliveryError(f"Apprise cannot use {target.route.masked}")
    _notify(
        plugin,
        target,
        body=_clip(message.slack, SLACK_TEXT_MAX),
        title=_clip(message.subject, SLACK_TITLE_MAX),
        body_format=apprise.NotifyFormat.TEXT,  # Apprise escapes & < > for Slack
    )


def apprise_send(message: Message, target: Target) -> None:
    """Any other Apprise service: the subject and the plain text, links and all."""
    plugin = instantiate(target.route.url)
    if plugin is None:
        raise DeliveryError(f"Apprise cannot use {target.route.masked}")
    _notify(plugin, target, body=message.text, title=message.subject, body_format=None)


def _notify(plugin: Any, target: Target, *, body: str, title: str, body_format: Any) -> None:
    with _apprise_lock, apprise.LogCapture(level=logging.WARNING) as captured:
        ok = plugin.notify(
            body=body,
            title=title,
            body_format=body_format or apprise.NotifyFormat.TEXT,
        )
    if not ok:
        lines = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
        reason = lines[-1] if lines else "the service did not accept it"
        raise DeliveryError(f"{target.route.service} {target.route.masked}: {reason}"[:1000])
