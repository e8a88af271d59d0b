"""A person approves in a real browser: headless Chromium (Debian's, driven by Playwright)
opens the approval link from a captured email, approves, sees the result; the next
approver's email arrives at the SMTP server."""

from __future__ import annotations

import re

from tests.e2e.conftest import Site, wait_for
from tests.factories import IDA, PAUL, submit
from tests.wire import phone_page


def test_approving_in_chromium_from_the_emailed_link(site: Site, tmp_path: object) -> None:
    ref = submit(site.engine)
    site.dispatch()
    site.form(site.approval_link(IDA), "approve")  # IT has approved already
    (approve,) = [u for u in site.links_to(PAUL) if u.endswith("decision=approve")]
    before = len(site.sink.received)
    with phone_page() as page:
        page.goto(approve)
        assert page.title() == f"Decide {ref} · procure"
        assert page.get_by_label("Approve").is_checked()  # chosen by the link
        page.screenshot(path=str(site.sink_folder / "approval.png"), full_page=True)
        # Readable on a phone: nothing wider than the screen (wide tables scroll inside).
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.get_by_label(re.compile("I confirm the contract terms")).check()
        page.get_by_label(re.compile("^Comment")).fill("Terms checked, framework price.")
        page.get_by_role("button", name="Submit decision").click()
        page.wait_for_load_state()
        # The joint review is approved, the request is not: the budget owner decides next.
        assert page.title() == f"Your approval is recorded: {ref} · procure"
        assert "Thank you: your approval is recorded" in page.content(), page.content()[-3000:]
        page.screenshot(path=str(site.sink_folder / "approved.png"), full_page=True)
        # The link decides once: back and submit again is refused, nothing changes.
        page.go_back()
        page.reload()
        assert "Nothing to decide here" in page.content()
    assert site.decisions() == 2
    assert wait_for(
        lambda: any(
            m.subject.startswith(f"Your decision: {ref}") for m in site.sink.received[before:]
        )
    ), [m.subject for m in site.sink.received[before:]]


def test_the_lines_read_on_a_phone_without_scrolling_sideways(site: Site) -> None:
    """At 390 px the Lines table once scrolled sideways inside its card with nothing to show
    it, the Sourcing column cut off ("Individual", "Terms no…"). Each line now stacks its cells
    as label and value: the table fits its card and every line's sourcing shows in full."""
    justification = "A dealer round the corner delivers tomorrow and takes returns for a month."
    ref = submit(
        site.engine,
        lines=[
            {
                "sku": "MON-27",
                "quantity": 12,
                "sourcing": "individual",
                "sourcing_justification": justification,
            },
            {"sku": "LAPTOP-STD-14", "quantity": 1},
        ],
    )
    site.dispatch()
    with phone_page() as page:
        page.goto(site.approval_link(IDA))
        assert page.title() == f"Decide {ref} · procure"
        page.screenshot(path=str(site.sink_folder / "lines-phone.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        table = page.locator("h2:text-is('Lines') + table")
        # Nothing of the table hides beyond its own box or its card's.
        widths = table.evaluate(
            "t => [t.scrollWidth, t.clientWidth, t.parentElement.scrollWidth,"
            " t.parentElement.clientWidth]"
        )
        assert widths[0] <= widths[1] and widths[2] <= widths[3], widths
        card = page.locator("section.card", has=table).bounding_box()
        assert card is not None
        for text in ("Individual order", justification, "Terms not covered", "€", "Monitor"):
            shown = table.get_by_text(text).first
            assert shown.is_visible(), text
            box = shown.bounding_box()
            assert box is not None, text
            # Within the card, not cut off at its edge (the card scrolls nothing sideways).
            assert card["x"] <= box["x"] and box["x"] + box["width"] <= card["x"] + card["width"], (
                text,
                box,
                card,
            )
        # Each value names its column (the headings row is hidden on a phone).
        assert not table.locator("th").first.is_visible()
        named = table.locator("td[data-label='Sourcing']").first.evaluate(
            "td => getComputedStyle(td, '::before').content"
        )
        assert named == '"Sourcing"'
        # On a wider screen the lines are a table with its headings again.
        page.set_viewport_size({"width": 900, "height": 844})
        assert table.locator("th").first.is_visible()


def test_confirming_receipt_in_chromium_from_the_emailed_link(site: Site) -> None:
    """Nina opens the link of her rollout email on her phone, unticks the dock she has not
    picked up yet, presses the button: the laptop is confirmed, the dock waits."""
    from sqlmodel import Session, select

    from models.assets import Asset
    from tests.e2e.test_web_receipt import DOCK, LAPTOP, receipt_link, rolled_out

    ref = rolled_out(site)
    with phone_page() as page:
        page.goto(receipt_link(site))
        assert page.title() == f"Your devices of {ref} · procure"
        laptop, dock = page.get_by_label(re.compile(LAPTOP)), page.get_by_label(re.compile(DOCK))
        assert laptop.is_checked() and dock.is_checked()  # ticked by default
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(site.sink_folder / "receipt.png"), full_page=True)
        dock.uncheck()
        page.get_by_role("button", name="I have received these devices").click()
        page.wait_for_load_state()
        assert page.title() == f"Received: {ref} · procure"
        content = page.content()
        assert "You confirmed that you received 1 device of" in content, content[-3000:]
        assert f"Still waiting for your confirmation: {DOCK}" in content
        page.screenshot(path=str(site.sink_folder / "received.png"), full_page=True)
        # Back to the page: only the dock has a box now.
        page.go_back()
        page.reload()
        assert page.get_by_label(re.compile(DOCK)).is_checked()
        assert page.get_by_label(re.compile(LAPTOP)).count() == 0
    with Session(site.engine) as session:
        confirmed = {a.serial: a.acknowledged_at is not None for a in session.exec(select(Asset))}
    assert confirmed == {LAPTOP: True, DOCK: False}
