"""Stand-ins for what lies outside this machine, on real sockets: Slack's webhook endpoint.

(The SMTP server is `notifications.sink.MailSink`, which the demo uses too.)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Posted:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers like Slack (200 "ok")."""

    def __init__(self) -> None:
        self.posts: list[Posted] = []
        self.status = 200
        self.reply = b"ok"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.posts.append(Posted(self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(receiver.reply)))
                self.end_headers()
                self.wfile.write(receiver.reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium(*args: str, profile: str) -> str:
    """Run Debian's headless Chromium (the `chromium` package; .ci/run installs it) with a
    fresh profile folder; returns what it printed on stdout."""
    import shutil
    import subprocess

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise AssertionError(
            "Chromium is not installed: apt-get install chromium (.ci/run does it on CI)"
        )
    done = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@contextmanager
def phone_page() -> Iterator[Any]:
    """A Playwright page in Debian's headless Chromium, at a phone's viewport (390 x 844)."""
    import shutil

    from playwright.sync_api import sync_playwright

    binary = shutil.which("chromium")
    assert binary, "Chromium is not installed: apt-get install chromium (.ci/run does it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=binary,
            args=[f for f in CHROMIUM_FLAGS if f != "--headless"],
            headless=True,
        )
        try:
            yield browser.new_page(viewport={"width": 390, "height": 844})
        finally:
            browser.close()
