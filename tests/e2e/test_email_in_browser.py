"""The approval email as a person sees it: rendered by headless Chromium, screenshot checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session

from models.db import transaction
from models.requests import Request
from notifications.context import ContextBuilder, Links
from notifications.render import Message, Renderer
from notifications.samples import NOW, sample_database, sample_rows
from tests.wire import chromium, phone_page

HOSTILE = (
    '<script>document.body.setAttribute("data-pwned","1")</script>'
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\"> 🚀 مرحبا"
)


def render_approval(justification: str | None = None) -> Message:
    with sample_database() as engine:
        if justification is not None:
            with transaction(engine) as session:
                session.execute(update(Request).values(justification=justification))
        with Session(engine) as session:
            row = sample_rows(session)["approval_needed"]
            context = ContextBuilder(
                session, Links("https://procure.example.com", b"k" * 32, NOW)
            ).build(row)
            return Renderer().render("approval_needed", context)


@pytest.fixture(scope="module")
def approval() -> Iterator[Message]:
    yield render_approval()


def pixels_of(png: Path) -> set[tuple[int, int, int]]:
    from matplotlib.image import imread

    image = imread(str(png))
    rgb = (image[:, :, :3] * 255).round().astype(int)
    return {tuple(p) for p in rgb.reshape(-1, 3)[::7].tolist()}


def test_the_approval_email_shows_its_buttons_and_content_in_a_browser(
    approval: Message, tmp_path: Path
) -> None:
    page = tmp_path / "approval.html"
    page.write_text(approval.html, encoding="utf-8")
    shot = tmp_path / "approval.png"
    chromium(
        "--window-size=800,1600", f"--screenshot={shot}", page.as_uri(), profile=str(tmp_path / "p")
    )
    seen = pixels_of(shot)
    assert len(seen) > 50  # text, tables and buttons, not a blank page
    # The approve (green), reject (red) and send-back (grey) buttons are painted.
    for colour in ((4, 120, 87), (185, 28, 28), (75, 85, 99)):
        assert colour in seen, colour
    dom = chromium("--dump-dom", page.as_uri(), profile=str(tmp_path / "p2"))
    assert dom.count("decision=approve") == 2  # the buttons at the top and at the bottom
    assert "Cost of involving purchasing late" in dom


def test_hostile_text_in_an_email_stays_text_in_a_browser(tmp_path: Path) -> None:
    message = render_approval(HOSTILE)
    page = tmp_path / "hostile.html"
    page.write_text(message.html, encoding="utf-8")
    dom = chromium("--dump-dom", page.as_uri(), profile=str(tmp_path / "p"))
    assert 'data-pwned="' not in dom  # neither the script nor the onerror handler ran
    assert "&lt;script&gt;" in dom and "🚀 مرحبا" in dom


def test_the_approval_email_fits_a_phones_width(approval: Message, tmp_path: Path) -> None:
    """A budget owner approves from a phone: the email is no wider than its screen (the buy,
    lease or DaaS table was 527 px at 390)."""
    page_file = tmp_path / "approval.html"
    page_file.write_text(approval.html, encoding="utf-8")
    with phone_page() as page:
        page.goto(page_file.as_uri())
        assert "Buy, lease or Device-as-a-Service" in page.content()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
