"""The lifecycle watch on a rollout: the devices of one request that end together are alerted
and refreshed as one group, whichever batches the watch meets them in (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from models import actions, pipeline, watch
from models.assets import Asset, Assignment, SerialIn
from models.catalog import Item
from models.db import transaction
from models.economics import agreement_options
from models.errors import RuleViolation, TransitionNotAllowed
from models.outbox import Notification
from tests.factories import (
    BOB,
    CARL,
    NINA,
    NOW,
    PAUL,
    RITA,
    SARA,
    approve_all,
    load_catalog_path,
    load_org_data,
    row_counts,
    show,
    submit,
)

# Delivered on NOW (Wednesday 25 Nov 2026): the standard laptop's 36-month warranty ends on
# 25 Nov 2029. 66 days before it the 90-day alert is due; 55 days before, the 60-day alert
# and the refresh.
END = "2029-11-25"
AT_90 = datetime(2029, 9, 20, 7, 0, tzinfo=UTC)
AT_60 = datetime(2029, 10, 1, 7, 0, tzinfo=UTC)
HOLDERS = (NINA, BOB, CARL, SARA)

# An agreement valid when the refreshes are drafted, whose price falls from ten units on.
AGREEMENT_2029 = """\
agreements:
  - code: FA-2029-NORDIC
    name: Workplace hardware 2029-2030
    supplier: NORDIC-IT
    valid_from: 2029-01-01
    valid_to: 2030-12-31
    terms:
      sla: Next business day on site
      warranty_months: 36
      returns: 30 days, collected free of charge
      erasure: NIST 800-88 purge with a certificate per device
    prices:
      - sku: LAPTOP-STD-14
        tiers:
          - {from: 1, to: 9, unit_price: 905.00}
          - {from: 10, unit_price: 869.00}
"""


def rolled_out(
    engine: Engine,
    prefix: str,
    *,
    days: tuple[int, ...] = (0,) * 12,
    ownership: str = "bought",
    **overrides: Any,
) -> tuple[str, list[str]]:
    """A rollout of standard laptops (bought, leased or DaaS), one delivered `days[n]` days
    after NOW for each n, handed out to four people in turn; its reference and serials."""
    ref = submit(
        engine,
        kind="rollout",
        on_behalf_of=None,
        justification=f"Watch: the team's laptops ({prefix}).",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": len(days), "ownership": ownership}],
        **overrides,
    )
    approve_all(engine, ref)
    serials = [f"{prefix}-{n:02d}" for n in range(1, len(days) + 1)]
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    for day in sorted(set(days)):
        with transaction(engine) as session:
            units = [SerialIn(s) for s, d in zip(serials, days, strict=True) if d == day]
            actions.deliver(session, ref=ref, units=units, now=NOW + timedelta(days=day))
    with transaction(engine) as session:
        assignments = [Assignment(s, HOLDERS[n % len(HOLDERS)]) for n, s in enumerate(serials)]
        actions.roll_out(
            session, ref=ref, assignments=assignments, now=NOW + timedelta(days=max(days))
        )
    return ref, serials


def run_watch(engine: Engine, at: datetime, ids: list[int] | None = None) -> watch.WatchResult:
    """One call of the watch in its own transaction, as one batch of the flow runs it."""
    with transaction(engine) as session:
        _, spec = pipeline.active(session)
        if ids is None:
            ids = watch.ending_assets(session, today=spec.calendar.today(at))
        return watch.lifecycle_watch(session, asset_ids=ids, spec=spec, now=at)


def ending(engine: Engine, at: datetime) -> list[int]:
    with transaction(engine, readonly=True) as session:
        _, spec = pipeline.active(session)
        return watch.ending_assets(session, today=spec.calendar.today(at))


def alerts(engine: Engine) -> list[tuple[str, dict[str, Any], int | None, int | None]]:
    """Every lifecycle alert queued: audience, context, request id, device id."""
    with transaction(engine, readonly=True) as session:
        rows = session.exec(
            select(Notification)
            .where(Notification.event == "lifecycle_alert")
            .order_by(col(Notification.id))
        ).all()
        return [(r.audience, r.context, r.request_id, r.asset_id) for r in rows]


def load_agreement_2029(engine: Engine, folder: Path) -> None:
    """The agreement valid when the refreshes are drafted (AGREEMENT_2029), loaded."""
    agreement = folder / "agreement-2029.yaml"
    agreement.write_text(AGREEMENT_2029, encoding="utf-8")
    load_catalog_path(engine, agreement)


def rerun_adds_nothing(engine: Engine, at: datetime, *, checked: int) -> None:
    """The watch run again at the same time checks the devices and writes nothing."""
    before = row_counts(engine)
    again = run_watch(engine, at)
    assert (again.checked, again.alerts, again.drafts, again.returns) == (checked, 0, [], [])
    assert row_counts(engine) == before


def request_id(engine: Engine, ref: str) -> int | None:
    with transaction(engine, readonly=True) as session:
        return actions.get_request(session, ref).id


def listed(context: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(d["serial"], d["sku"], d["holder"]) for d in context["devices"]]


def expected_devices(serials: list[str]) -> list[tuple[str, str, str]]:
    return [(s, "LAPTOP-STD-14", HOLDERS[n % len(HOLDERS)]) for n, s in enumerate(serials)]


def test_a_rollout_ending_together_gets_one_alert_per_team_listing_every_device(
    engine: Engine,
) -> None:
    ref, serials = rolled_out(engine, "R")
    result = run_watch(engine, AT_90)
    assert (result.checked, result.alerts, result.drafts, result.returns) == (12, 2, [], [])
    queued = alerts(engine)
    assert [audience for audience, *_ in queued] == ["team:it", "team:purchasing"]
    for _, context, request, asset in queued:
        assert (request, asset) == (request_id(engine, ref), None)
        assert (context["ref"], context["ends"], context["end"]) == (ref, "warranty", END)
        assert (context["days_left"], context["count"], context["requester"]) == (66, 12, RITA)
        assert listed(context) == expected_devices(serials)


def test_a_group_split_over_batches_is_alerted_once_and_a_rerun_adds_nothing(
    engine: Engine,
) -> None:
    ref, serials = rolled_out(engine, "B")
    ids = ending(engine, AT_90)
    first = run_watch(engine, AT_90, ids[:5])
    second = run_watch(engine, AT_90, ids[5:])
    assert (first.checked, first.alerts) == (5, 2)
    assert (second.checked, second.alerts) == (7, 0)
    (_, it, *_), (_, purchasing, *_) = alerts(engine)
    assert listed(it) == listed(purchasing) == expected_devices(serials)
    assert (it["ref"], it["count"]) == (ref, 12)
    rerun_adds_nothing(engine, AT_90, checked=12)


def test_a_group_split_over_batches_gets_one_refresh_and_a_rerun_drafts_nothing(
    engine: Engine,
) -> None:
    rolled_out(engine, "S")
    ids = ending(engine, AT_60)
    first = run_watch(engine, AT_60, ids[:5])
    second = run_watch(engine, AT_60, ids[5:])
    assert (first.alerts, len(first.drafts)) == (2, 1)
    assert (second.alerts, second.drafts) == (0, [])
    (line,) = show(engine, first.drafts[0], AT_60)["lines"]
    assert line["quantity"] == 12
    rerun_adds_nothing(engine, AT_60, checked=12)


def test_devices_of_one_request_ending_on_different_days_form_separate_groups(
    engine: Engine,
) -> None:
    rolled_out(engine, "D", days=(0,) * 8 + (1,) * 4)
    result = run_watch(engine, AT_60)
    assert (result.checked, result.alerts, len(result.drafts)) == (12, 4, 2)
    queued = [
        (audience, context["end"], context["count"]) for audience, context, *_ in alerts(engine)
    ]
    assert queued == [
        ("team:it", END, 8),
        ("team:purchasing", END, 8),
        ("team:it", "2029-11-26", 4),
        ("team:purchasing", "2029-11-26", 4),
    ]
    drafts = [show(engine, draft) for draft in result.drafts]
    assert [(d["needed_by"], d["lines"][0]["quantity"]) for d in drafts] == [
        (END, 8),
        ("2029-11-26", 4),
    ]


def test_a_group_gets_one_refresh_for_its_requester_at_the_volume_tier_price(
    engine: Engine, tmp_path: Path
) -> None:
    load_agreement_2029(engine, tmp_path)
    ref, serials = rolled_out(engine, "V")
    (draft,) = run_watch(engine, AT_60).drafts
    detail = show(engine, draft, AT_60)
    assert (detail["status"], detail["kind"]) == ("draft", "refresh")
    assert (detail["requester"], detail["on_behalf_of"]) == (RITA, RITA)
    assert (detail["needed_by"], detail["cost_centre"]) == (END, "CC-ENG")
    assert detail["idempotency_key"] == f"lifecycle:{ref}:warranty:{END}"
    # Ten devices named, read in every email of the request; the rest a command away.
    assert all(serial in detail["justification"] for serial in serials[:10])
    assert not any(serial in detail["justification"] for serial in serials[10:])
    assert detail["justification"].endswith(
        f"V-10 (LAPTOP-STD-14) and 2 more (procure asset list --request {ref})."
    )
    (line,) = detail["lines"]
    assert (line["sku"], line["quantity"]) == ("LAPTOP-STD-14", 12)
    # One request for twelve: the agreement's tier from ten units on, not a single unit's price.
    with transaction(engine, readonly=True) as session:
        item = session.exec(select(Item).where(Item.sku == "LAPTOP-STD-14")).one()
        assert item.id is not None
        prices = {
            n: agreement_options(
                session, item_id=item.id, quantity=n, day=AT_60.date(), currency="EUR"
            )[0].unit_price
            for n in (1, 12)
        }
    assert prices == {1: Decimal("905.00"), 12: Decimal("869.00")}
    assert Decimal(line["unit_price"]) == prices[12]
    assert Decimal(detail["total"]) == 12 * prices[12]
    # Rita is told what the draft replaces.
    with transaction(engine, readonly=True) as session:
        told = session.exec(
            select(Notification).where(
                Notification.event == "draft_ready", Notification.audience == f"person:{RITA}"
            )
        ).one()
    assert told.context["devices"] == 12 and told.context["ref"] == ref


def test_a_group_whose_requester_left_gets_a_refresh_per_holder(engine: Engine) -> None:
    _, serials = rolled_out(engine, "L")
    load_org_data(
        engine,
        {
            "people": [
                {
                    "email": RITA,
                    "name": "Rita Requester",
                    "department": "Engineering",
                    "roles": ["requester"],
                    "active": False,
                }
            ]
        },
    )
    result = run_watch(engine, AT_60)
    assert result.alerts == 2 and len(result.drafts) == 12
    assert [context["requester"] for _, context, *_ in alerts(engine)] == [None, None]
    drafts = [show(engine, draft, AT_60) for draft in result.drafts]
    assert [(d["requester"], d["idempotency_key"]) for d in drafts] == [
        (HOLDERS[n % len(HOLDERS)], f"lifecycle:{serial}:{END}") for n, serial in enumerate(serials)
    ]
    assert {d["lines"][0]["quantity"] for d in drafts} == {1}
    assert run_watch(engine, AT_60).drafts == []


def test_a_device_alone_is_alerted_and_refreshed_for_its_holder_as_before(
    engine: Engine, tmp_path: Path
) -> None:
    load_agreement_2029(engine, tmp_path)
    ref = submit(engine, justification="Watch: Nina's laptop.")
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
        actions.deliver(session, ref=ref, units=[SerialIn("ONE-1")], now=NOW)
        actions.roll_out(session, ref=ref, now=NOW)
        asset = session.exec(select(Asset).where(Asset.serial == "ONE-1")).one()
    result = run_watch(engine, AT_60)
    assert (result.checked, result.alerts, len(result.drafts)) == (1, 2, 1)
    for _, context, _, asset_id in alerts(engine):
        assert asset_id == asset.id
        assert context["count"] == 1 and listed(context) == [("ONE-1", "LAPTOP-STD-14", NINA)]
    detail = show(engine, result.drafts[0], AT_60)
    assert (detail["requester"], detail["on_behalf_of"]) == (NINA, NINA)
    assert detail["idempotency_key"] == f"lifecycle:ONE-1:{END}"
    (line,) = detail["lines"]
    assert (line["quantity"], line["unit_price"]) == (1, "905.00")  # a single unit's price
    assert run_watch(engine, AT_60) == watch.WatchResult(checked=1)

    # Nina sends the draft (procure request send); only she may, and only once.
    draft = result.drafts[0]
    before = row_counts(engine)
    refused = pytest.raises(RuleViolation, match=f"only the requester of {draft} can send it")
    with refused, transaction(engine) as session:
        actions.send_draft(session, ref=draft, actor_email=PAUL, now=AT_60)
    assert row_counts(engine) == before
    with transaction(engine) as session:
        sent = actions.send_draft(session, ref=draft, actor_email=NINA, now=AT_60)
        assert sent.status == "in_review"
    before = row_counts(engine)
    with (
        pytest.raises(
            TransitionNotAllowed, match=f"^{draft} is in_review, not a draft: it was sent already$"
        ),
        transaction(engine) as session,
    ):
        actions.send_draft(session, ref=draft, actor_email=NINA, now=AT_60)
    assert row_counts(engine) == before


def test_the_monitors_of_a_workplace_are_not_alerted_or_refreshed_at_their_warranty_end(
    engine: Engine, tmp_path: Path
) -> None:
    """A laptop and two monitors, all under 36 months' warranty: the warranty end is a reason to
    refresh the laptop, not its monitors (a peripheral's category, economics.
    peripheral_categories); the alert lists the laptop alone, the refresh asks for it alone."""
    load_agreement_2029(engine, tmp_path)
    ref = submit(
        engine,
        justification="Watch: Nina's workplace.",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 1}, {"sku": "MON-27", "quantity": 2}],
    )
    approve_all(engine, ref)
    units = [SerialIn("WP-L", "LAPTOP-STD-14"), SerialIn("WP-M1", "MON-27"),
             SerialIn("WP-M2", "MON-27")]  # fmt: skip
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
        actions.deliver(session, ref=ref, units=units, now=NOW)
        actions.roll_out(session, ref=ref, now=NOW)
    assert len(ending(engine, AT_60)) == 3  # all three end on 25 Nov 2029
    result = run_watch(engine, AT_60)
    assert (result.checked, result.alerts, len(result.drafts)) == (1, 2, 1)
    for _, context, _, _ in alerts(engine):
        assert context["count"] == 1 and listed(context) == [("WP-L", "LAPTOP-STD-14", NINA)]
    (line,) = show(engine, result.drafts[0], AT_60)["lines"]
    assert (line["sku"], line["quantity"]) == ("LAPTOP-STD-14", 1)
    rerun_adds_nothing(engine, AT_60, checked=1)


def test_a_group_drafted_per_device_while_it_was_one_device_is_not_drafted_again_as_a_whole(
    engine: Engine,
) -> None:
    ref = submit(
        engine,
        kind="rollout",
        on_behalf_of=None,
        justification="Watch: two laptops, handed out apart.",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 2}],
    )
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
        actions.deliver(session, ref=ref, units=[SerialIn("A-1"), SerialIn("A-2")], now=NOW)
        actions.roll_out(session, ref=ref, assignments=[Assignment("A-1", NINA)], now=NOW)
    (alone,) = run_watch(engine, AT_60).drafts
    assert show(engine, alone, AT_60)["idempotency_key"] == f"lifecycle:A-1:{END}"
    later = AT_60 + timedelta(days=1)
    with transaction(engine) as session:
        actions.roll_out(session, ref=ref, assignments=[Assignment("A-2", BOB)], now=later)
    result = run_watch(engine, later)
    # The request's laptops ending on that day were alerted at this threshold already; A-1's
    # holder has her refresh, so A-2's holder gets his own, and nobody one for both.
    assert result.alerts == 0
    (second,) = result.drafts
    detail = show(engine, second, later)
    assert (detail["requester"], detail["idempotency_key"]) == (BOB, f"lifecycle:A-2:{END}")


AT_30 = datetime(2029, 10, 30, 8, 0, tzinfo=UTC)  # 26 days before the DaaS term ends


def test_a_daas_group_asked_back_tells_each_holder_and_it_once_in_its_alert(
    engine: Engine,
) -> None:
    _, serials = rolled_out(engine, "DG", days=(0,) * 8, ownership="daas")
    result = run_watch(engine, AT_30)
    assert sorted(result.returns) == sorted(serials)
    with transaction(engine, readonly=True) as session:
        rows = session.exec(
            select(Notification).where(Notification.event == "return_requested")
        ).all()
        asked = sorted((r.audience, r.context["serial"]) for r in rows)
    # Each holder hears of their own device; IT of none of them one by one...
    expected = sorted((f"person:{HOLDERS[n % len(HOLDERS)]}", s) for n, s in enumerate(serials))
    assert asked == expected
    # ... but from the one alert that lists the group.
    ((_, it, *_),) = [a for a in alerts(engine) if a[0] == "team:it"]
    assert (it["ends"], it["count"]) == ("daas", 8)


def test_a_leased_group_is_renewed_by_a_lease_over_the_same_term(engine: Engine) -> None:
    ref, _ = rolled_out(engine, "LG", ownership="leased")
    (draft,) = run_watch(engine, AT_60).drafts
    detail = show(engine, draft, AT_60)
    assert detail["idempotency_key"] == f"lifecycle:{ref}:lease:{END}"
    (line,) = detail["lines"]
    # The sample's lease: 27.90 a month over 36 months, not the laptop's price to buy.
    assert (line["sku"], line["quantity"], line["ownership"], line["term_months"]) == (
        "LAPTOP-STD-14",
        12,
        "leased",
        36,
    )
    assert Decimal(line["unit_price"]) == Decimal("27.90") * 36
    assert Decimal(detail["total"]) == 12 * Decimal("27.90") * 36


def test_a_daas_device_refreshed_for_its_holder_is_renewed_as_a_service(engine: Engine) -> None:
    # Rita has left: each holder gets a refresh of their own, sourced as their device was.
    _, serials = rolled_out(engine, "DS", days=(0,) * 2, ownership="daas")
    load_org_data(
        engine,
        {
            "people": [
                {
                    "email": RITA,
                    "name": "Rita Requester",
                    "department": "Engineering",
                    "roles": ["requester"],
                    "active": False,
                }
            ]
        },
    )
    drafts = [show(engine, ref, AT_60) for ref in run_watch(engine, AT_60).drafts]
    assert [(d["requester"], d["idempotency_key"]) for d in drafts] == [
        (HOLDERS[n], f"lifecycle:{serial}:{END}") for n, serial in enumerate(serials)
    ]
    for d in drafts:
        (line,) = d["lines"]
        assert (line["ownership"], line["term_months"], line["quantity"]) == ("daas", 36, 1)
        assert Decimal(line["unit_price"]) == Decimal("33.50") * 36


def test_a_bought_group_is_still_renewed_by_buying(engine: Engine) -> None:
    rolled_out(engine, "BG", days=(0,) * 3)
    (draft,) = run_watch(engine, AT_60).drafts
    (line,) = show(engine, draft, AT_60)["lines"]
    assert (line["ownership"], line["term_months"], line["quantity"]) == ("bought", None, 3)


def rendered(engine: Engine, event: str, audience: str) -> tuple[str, str, str]:
    """The subject, text and HTML of the latest `event` to `audience`, rendered as it is sent."""
    return rendered_all(engine, [(event, audience)])[0]


def rendered_all(engine: Engine, pairs: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """rendered() for many (event, audience) pairs, with one renderer and one read (its
    templates compiled once: a renderer each made the test of every notice take a minute)."""
    from notifications.context import ContextBuilder, Links
    from notifications.render import Renderer

    renderer = Renderer()
    out = []
    with transaction(engine, readonly=True) as session:
        builder = ContextBuilder(session, Links("https://procure.example.com", b"k" * 32, AT_30))
        for event, audience in pairs:
            row = session.exec(
                select(Notification)
                .where(Notification.event == event, Notification.audience == audience)
                .order_by(col(Notification.id).desc())
            ).first()
            assert row is not None, (event, audience)
            message = renderer.render(event, builder.build(row))
            out.append((message.subject, message.text, message.html))
    return out


@pytest.mark.parametrize(
    ("ownership", "what"), [("daas", "DaaS contract"), ("leased", "lease")], ids=["daas", "lease"]
)
def test_the_notices_of_a_contract_s_end_name_it_as_people_write_it(
    engine: Engine, ownership: str, what: str
) -> None:
    """'The DaaS contract of the 2 devices ...' (not 'The daas of', nor 'Daas of ...' in the
    subject); a lease stays a lease. The alert, the holders' return notices, the refresh drafted
    for the requester and its justification say it alike."""
    ref, serials = rolled_out(engine, "CW", days=(0,) * 2, ownership=ownership)
    result = run_watch(engine, AT_30)
    assert sorted(result.returns) == serials and len(result.drafts) == 1
    subject, text, html = rendered(engine, "lifecycle_alert", "team:it")
    assert (
        subject
        == f"{what[0].upper()}{what[1:]} of 2 devices of {ref} ends Sun 25 Nov 2029 (in 26 days)"
    )
    assert f"The {what} of the 2 devices of {ref} listed below ends on Sun 25 Nov 2029." in text
    assert f"The {what} of the 2 devices of {ref}" in html
    _, text, _ = rendered(engine, "return_requested", f"person:{HOLDERS[0]}")
    assert f"Why: The {what} ends on {END}" in text, text  # procure's reason, not a quote
    _, text, _ = rendered(engine, "draft_ready", f"person:{RITA}")
    assert f"The {what} of 2 devices of {ref}, which you requested, ends on Sun 25 Nov 2029" in text
    justification = show(engine, result.drafts[0], AT_30)["justification"]
    assert justification.startswith(f"The {what} of 2 devices of {ref} ends on {END}: CW-01 ")
    # Every notice of the request's life, from the joint review's (the line's sourcing: "DaaS,
    # €33.50/month × 36" in HTML) to the return: "DaaS" as written, never "Daas" or "daas".
    with transaction(engine, readonly=True) as session:
        rows = {(r.event, r.audience) for r in session.exec(select(Notification)).all()}
    everything = rendered_all(engine, sorted(rows))
    spelled = {w for m in everything for w in re.findall(r"(?i)daas", "".join(m))}
    assert spelled == {"DaaS"}, spelled  # a lease's too: its buy / lease / DaaS comparison
    review = rendered(engine, "review_needed", "team:purchasing")[2]
    offer = {"daas": "DaaS, €33.50/month &times; 36", "leased": "Lease, €27.90/month &times; 36"}
    assert offer[ownership] in review
