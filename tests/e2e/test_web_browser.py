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
