"""The money at every decision, as pure functions checked against hand computations.

Volume tiers and their tables, the delivery plan, buy/lease/DaaS total cost of ownership,
the late-involvement ledger (the article's 100 devices: €90 unclear terms + €70 individual
order + €80 missing delivery planning = €240 a device, €24,000 in all), fiscal years and
budgets, contract terms. Every expected figure has its arithmetic in the comment next to it.
No database: the SQLModel rows these functions read (Offer, FrameworkAgreement,
RequestLine) are built in memory.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from models.catalog import FrameworkAgreement, Offer, TierCreate, tier_problems
from models.economics import (
    KINDS,
    LABELS,
    BudgetStatus,
    BundlingChance,
    LineFacts,
    TcoOption,
    Tier,
    delivery_plan,
    fiscal_range,
    fiscal_year,
    ledger,
    order_by_date,
    tco_options,
    terms_from_agreements,
    terms_view,
    tier_for,
)
from models.pipeline import DeviceCosts, LateCosts
from models.requests import RequestLine
from models.types import money

D = Decimal
ARTICLE = LateCosts()  # €90 unclear terms, €70 individual order, €80 missed delivery planning
NO_SERVICE_COSTS = DeviceCosts(
    rollout=D("0.00"), support_per_month=D("0.00"), return_handling=D("0.00"), erasure=D("0.00")
)
# Services priced with cents, so that every sum below has some.
CENTS_COSTS = DeviceCosts(
    rollout=D("27.90"), support_per_month=D("3.35"), return_handling=D("12.50"), erasure=D("9.99")
)
# Over 36 months: 27.90 + 3.35 x 36 (= 120.60) + 12.50 + 9.99 = 170.99 a device.


# ------------------------------------------------------------------ volume tiers

CLOSED_TABLE = (
    Tier(1, 49, D("899.00")),
    Tier(50, 199, D("869.00")),
    Tier(200, 10_000, D("839.00")),
)
OPEN_TABLE = (*CLOSED_TABLE[:2], Tier(200, None, D("839.00")))


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        (1, "899.00"),  # first unit of 1-49
        (49, "899.00"),  # last unit of 1-49
        (50, "869.00"),  # first unit of 50-199
        (199, "869.00"),  # last unit of 50-199
        (200, "839.00"),  # first unit of 200-10,000
        (10_000, "839.00"),  # last unit of 200-10,000
        (10_001, None),  # one past the closed last tier: no price
        (0, None),  # below the first tier
    ],
)
def test_tier_for_picks_the_tier_at_every_boundary_of_a_closed_table(
    quantity: int, expected: str | None
) -> None:
    tier = tier_for(CLOSED_TABLE, quantity)
    assert (tier.unit_price if tier else None) == (D(expected) if expected else None)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        (49, "899.00"),
        (50, "869.00"),
        (199, "869.00"),
        (200, "839.00"),
        (10_001, "839.00"),
        (1_000_000, "839.00"),
    ],
)
def test_an_open_ended_last_tier_covers_every_quantity_above_its_start(
    quantity: int, expected: str
) -> None:
    tier = tier_for(OPEN_TABLE, quantity)
    assert tier is not None
    assert tier.unit_price == D(expected)


def test_tier_for_an_empty_table_is_none() -> None:
    assert tier_for((), 1) is None


def tiers(*spans: tuple[int, int | None]) -> list[TierCreate]:
    """A tier table as a catalog file writes it: (from, to) pairs, prices falling by tier."""
    return [
        TierCreate.model_validate({"from": low, "to": high, "unit_price": f"{900 - 10 * i}.00"})
        for i, (low, high) in enumerate(spans)
    ]


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        pytest.param([(1, 49), (50, 199), (200, 10_000)], [], id="contiguous-closed"),
        pytest.param([(1, 49), (50, 199), (200, None)], [], id="contiguous-open-ended"),
        pytest.param([(1, None)], [], id="one-open-tier"),
        pytest.param([(1, 1), (2, 2), (3, None)], [], id="one-unit-tiers"),
        pytest.param(
            [(1, 49), (60, 199), (200, None)],
            # 1-49 then 60: units 50 (= 49 + 1) to 59 (= 60 - 1) are unpriced.
            [((1, "from"), "leaves a gap: units 50 to 59 have no price")],
            id="gap",
        ),
        pytest.param(
            [(1, 49), (40, 199), (200, None)],
            # 40 <= 49: units 40-49 would have two prices.
            [((1, "from"), "overlaps the tier before it (which runs to 49)")],
            id="overlap",
        ),
        pytest.param(
            [(1, 49), (50, 20), (200, None)],
            [((1, "to"), "ends (20) before it starts (50)")],
            id="ends-before-it-starts",
        ),
        pytest.param(
            [(1, 49), (50, None), (200, None)],
            [((1, "to"), "only the last tier may be open-ended")],
            id="open-ended-not-last",
        ),
        pytest.param(
            [(5, 49), (50, None)],
            # Tables start at 1: said so, not as a gap before the first tier.
            [((0, "from"), "tiers must start at 1 (the first starts at 5)")],
            id="not-starting-at-1",
        ),
        pytest.param(
            [(2, 49), (51, None)],
            # Both at once: the start at 2, and the one unit 50 (= 49 + 1 = 51 - 1) unpriced.
            [
                ((0, "from"), "tiers must start at 1 (the first starts at 2)"),
                ((1, "from"), "leaves a gap: unit 50 has no price"),
            ],
            id="two-gaps",
        ),
    ],
)
def test_tier_problems_names_each_problem_with_its_path_and_message(
    spans: list[tuple[int, int | None]], expected: list[tuple[tuple[int, str], str]]
) -> None:
    assert tier_problems(tiers(*spans)) == expected


def test_an_overlapping_tier_inside_another_does_not_report_a_gap_the_table_does_not_have() -> None:
    # 1-49 already prices units 21-49; the tier 10-20 inside it overlaps, and nothing more:
    # the next tier starts at 50 = 49 + 1, right after the furthest unit priced so far.
    assert tier_problems(tiers((1, 49), (10, 20), (50, None))) == [
        ((1, "from"), "overlaps the tier before it (which runs to 49)")
    ]


def test_every_quantity_of_a_table_without_problems_has_exactly_one_tier() -> None:
    written = tiers((1, 49), (50, 199), (200, 10_000))
    assert tier_problems(written) == []
    table = [Tier(t.from_, t.to, t.unit_price) for t in written]
    for quantity in range(1, 10_001):
        assert sum(t.covers(quantity) for t in table) == 1, quantity


# ------------------------------------------------------------------ delivery plan


@pytest.mark.parametrize(
    ("needed_by", "lead_time", "preparation", "expected"),
    [
        (date(2026, 12, 24), 10, 5, date(2026, 12, 9)),  # 24 - (10 + 5) = 9 December
        (date(2027, 1, 5), 10, 5, date(2026, 12, 21)),  # 5 Jan - 15 days = 21 Dec (31 - 10)
        (date(2028, 3, 1), 0, 1, date(2028, 2, 29)),  # 2028 is a leap year
        (date(2026, 12, 24), 0, 0, date(2026, 12, 24)),  # nothing to wait for
        (date(2026, 3, 1), 28, 0, date(2026, 2, 1)),  # February 2026 has 28 days
    ],
)
def test_the_order_by_date_is_needed_by_minus_lead_time_minus_preparation(
    needed_by: date, lead_time: int, preparation: int, expected: date
) -> None:
    assert order_by_date(needed_by, lead_time, preparation) == expected


# Needed on 24 December 2026, supplier lead time 10 days, 5 days to prepare:
# order by 24 - 15 = 9 December.
@pytest.mark.parametrize(
    ("today", "ordered_on", "days_left", "missed"),
    [
        pytest.param(date(2026, 12, 1), None, 8, False, id="not-ordered-8-days-before"),  # 9 - 1
        pytest.param(date(2026, 12, 8), None, 1, False, id="not-ordered-the-day-before"),  # 9 - 8
        pytest.param(date(2026, 12, 9), None, 0, False, id="not-ordered-on-the-day"),  # 9 - 9
        pytest.param(date(2026, 12, 10), None, -1, True, id="not-ordered-the-day-after"),  # 9 - 10
        # Ordered today: days left as above; missed only if ordered after the 9th.
        pytest.param(date(2026, 12, 8), date(2026, 12, 8), 1, False, id="ordered-the-day-before"),
        pytest.param(date(2026, 12, 9), date(2026, 12, 9), 0, False, id="ordered-on-the-day"),
        pytest.param(date(2026, 12, 10), date(2026, 12, 10), -1, True, id="ordered-the-day-after"),
        # Ordered in time, looked at long after: the date is past (9 - 20 = -11), not missed.
        pytest.param(
            date(2026, 12, 20), date(2026, 12, 8), -11, False, id="ordered-in-time-seen-later"
        ),
        pytest.param(
            date(2026, 12, 20), date(2026, 12, 9), -11, False, id="ordered-on-day-seen-later"
        ),
        pytest.param(
            date(2026, 12, 20), date(2026, 12, 10), -11, True, id="ordered-late-seen-later"
        ),
    ],
)
def test_the_delivery_plan_counts_days_left_and_knows_when_the_order_by_date_was_missed(
    today: date, ordered_on: date | None, days_left: int, missed: bool
) -> None:
    plan = delivery_plan(date(2026, 12, 24), 10, 5, today, ordered_on)
    assert plan.order_by == date(2026, 12, 9)
    assert (plan.needed_by, plan.lead_time_days, plan.preparation_days) == (
        date(2026, 12, 24),
        10,
        5,
    )
    assert plan.ordered_on == ordered_on
    assert plan.days_left == days_left
    assert plan.missed is missed


# ------------------------------------------------------------------ total cost of ownership


def offer(
    kind: str,
    rate: str,
    *,
    provider: str,
    term: int = 36,
    includes: tuple[str, ...] = (),
    residual: str = "0.00",
) -> tuple[Offer, str]:
    """A lease or DaaS offer with its provider's name, as tco_options takes it."""
    row = Offer(
        item_id=1,
        kind=kind,
        supplier_id=1,
        monthly_rate=D(rate),
        term_months=term,
        buy_residual_value=D(residual),
        **{f"includes_{name}": True for name in includes},
    )
    return row, provider


def figures(option: TcoOption) -> tuple[Any, ...]:
    return (
        option.option,
        option.provider,
        str(option.capex),
        str(option.opex),
        str(option.residual),
        str(option.total),
        str(option.monthly),
        option.cheapest,
    )


def test_tco_of_buying_leasing_and_daas_with_cents_over_36_months() -> None:
    options = tco_options(
        quantity=7,
        purchase_price=D("1049.90"),
        purchase_provider="Acme Direct",
        offers=[
            offer(
                "daas",
                "33.50",
                provider="DaaS GmbH",
                includes=("rollout", "return", "erasure"),
                residual="175.50",
            ),
            offer("lease", "27.90", provider="LeaseCo", residual="150.00"),
            # Another term: neither an option nor a source of the residual value.
            offer("lease", "19.99", provider="ShortLease", term=24, residual="300.00"),
        ],
        costs=CENTS_COSTS,
        term_months=36,
    )
    # Buy first, then the lease offers, then the DaaS offers.
    assert [figures(o) for o in options] == [
        (
            "buy",
            "Acme Direct",
            "7349.30",  # capex: 1,049.90 x 7
            "1196.93",  # opex: every service, 170.99 x 7
            "1228.50",  # residual: the highest of the 36-month offers' (175.50) x 7
            "7317.73",  # 7,349.30 + 1,196.93 - 1,228.50
            "203.27",  # 7,317.73 / 36 = 203.2702...
            True,
        ),
        (
            "lease",
            "LeaseCo",
            "0.00",
            "8227.73",  # (27.90 x 36 = 1,004.40, + every service 170.99) = 1,175.39 x 7
            "0.00",
            "8227.73",
            "228.55",  # 8,227.73 / 36 = 228.5480...
            False,
        ),
        (
            "daas",
            "DaaS GmbH",
            "0.00",
            "9286.20",  # (33.50 x 36 = 1,206.00, + support 3.35 x 36 = 120.60) = 1,326.60 x 7
            "0.00",
            "9286.20",
            "257.95",  # 9,286.20 / 36 = 257.95 exactly
            False,
        ),
    ]
    assert {o.term_months for o in options} == {36}
    assert [o.includes for o in options] == [(), (), ("rollout", "return", "erasure")]


def test_the_cheapest_option_is_marked_and_only_that_one() -> None:
    # Default device costs over 36 months: rollout 60 + support 8 x 36 (= 288) + return 40
    # + erasure 25 = 413.00 a device.
    options = tco_options(
        quantity=3,
        purchase_price=D("1299.00"),
        purchase_provider="Acme Direct",
        offers=[
            offer("lease", "27.90", provider="LeaseCo", includes=("support",)),
            offer(
                "daas",
                "33.50",
                provider="DaaS GmbH",
                includes=("rollout", "support", "return", "erasure"),
            ),
        ],
        costs=DeviceCosts(),
        term_months=36,
    )
    assert [(o.option, str(o.total), str(o.monthly), o.cheapest) for o in options] == [
        # 1,299.00 x 3 = 3,897.00, + 413.00 x 3 = 1,239.00 -> 5,136.00; / 36 = 142.666...
        ("buy", "5136.00", "142.67", False),
        # 27.90 x 36 = 1,004.40, + 60 + 40 + 25 = 125.00 -> 1,129.40 x 3 = 3,388.20; / 36 = 94.116...
        ("lease", "3388.20", "94.12", True),
        # 33.50 x 36 = 1,206.00 (everything included) x 3 = 3,618.00; / 36 = 100.50
        ("daas", "3618.00", "100.50", False),
    ]


@pytest.mark.parametrize(
    ("includes", "expected"),
    [
        # 10.00 x 12 = 120.00 for the offer; default services over 12 months:
        # rollout 60 + support 8 x 12 (= 96) + return 40 + erasure 25 = 221.00.
        ((), "341.00"),  # 120 + 221
        (("rollout",), "281.00"),  # 120 + 221 - 60
        (("support",), "245.00"),  # 120 + 221 - 96
        (("return",), "301.00"),  # 120 + 221 - 40
        (("erasure",), "316.00"),  # 120 + 221 - 25
        (("rollout", "support", "return", "erasure"), "120.00"),  # the rate alone
    ],
)
def test_a_lease_adds_the_services_it_does_not_include(
    includes: tuple[str, ...], expected: str
) -> None:
    options = tco_options(
        quantity=1,
        purchase_price=D("999.00"),
        purchase_provider="Acme Direct",
        offers=[offer("lease", "10.00", provider="LeaseCo", term=12, includes=includes)],
        costs=DeviceCosts(),
        term_months=12,
    )
    lease = options[1]
    assert (lease.option, lease.capex, lease.residual) == ("lease", D("0.00"), D("0.00"))
    assert lease.opex == lease.total == D(expected)


def test_offers_of_another_term_are_ignored_and_buying_stands_alone() -> None:
    options = tco_options(
        quantity=1,
        purchase_price=D("999.99"),
        purchase_provider="Acme Direct",
        offers=[
            offer("lease", "9.99", provider="LeaseCo", term=36, residual="400.00"),
            offer("daas", "12.49", provider="DaaS GmbH", term=36),
        ],
        costs=DeviceCosts(),
        term_months=24,
    )
    assert [figures(o) for o in options] == [
        (
            "buy",
            "Acme Direct",
            "999.99",  # 999.99 x 1
            "317.00",  # 60 + 8 x 24 (= 192) + 40 + 25
            "0.00",  # no 24-month offer gives a residual value
            "1316.99",  # 999.99 + 317.00
            "54.87",  # 1,316.99 / 24 = 54.8745...
            True,
        )
    ]


@pytest.mark.parametrize(
    ("purchase_price", "cheapest"),
    [
        # Zero service costs, 12 months, 3 devices: lease and DaaS at 27.90 x 12 = 334.80
        # a device, x 3 = 1,004.40 each.
        ("334.80", "buy"),  # 334.80 x 3 = 1,004.40: a three-way tie, "buy" sorts first
        ("334.81", "daas"),  # 334.81 x 3 = 1,004.43: lease and DaaS tie, "daas" < "lease"
    ],
)
def test_a_tie_between_kinds_is_broken_by_the_option_name_whatever_the_order_of_offers(
    purchase_price: str, cheapest: str
) -> None:
    lease = offer("lease", "27.90", provider="LeaseCo", term=12)
    daas = offer("daas", "27.90", provider="DaaS GmbH", term=12)
    for offers in ([lease, daas], [daas, lease]):
        options = tco_options(
            quantity=3,
            purchase_price=D(purchase_price),
            purchase_provider="Acme Direct",
            offers=offers,
            costs=NO_SERVICE_COSTS,
            term_months=12,
        )
        assert [o.option for o in options if o.cheapest] == [cheapest]
        assert {str(o.total) for o in options if o.option != "buy"} == {"1004.40"}


def test_a_tie_between_two_offers_of_the_same_kind_marks_the_same_offer_whatever_their_order() -> (
    None
):
    # Both leases: 27.90 x 12 = 334.80 a device, x 3 = 1,004.40; buying: 400.00 x 3 = 1,200.00.
    # The offers come from the database in no declared order, so the mark must not follow it.
    alpha = offer("lease", "27.90", provider="Alpha Leasing", term=12)
    beta = offer("lease", "27.90", provider="Beta Leasing", term=12)
    marked = []
    for offers in ([alpha, beta], [beta, alpha]):
        options = tco_options(
            quantity=3,
            purchase_price=D("400.00"),
            purchase_provider="Acme Direct",
            offers=offers,
            costs=NO_SERVICE_COSTS,
            term_months=12,
        )
        assert sum(o.cheapest for o in options) == 1
        marked.append([o.provider for o in options if o.cheapest])
    assert marked[0] == marked[1]


def test_the_monthly_figure_rounds_half_a_cent_up() -> None:
    options = tco_options(
        quantity=6,
        purchase_price=D("2469.13"),
        purchase_provider="Acme Direct",
        offers=[],
        costs=NO_SERVICE_COSTS,
        term_months=12,
    )
    (buy,) = options
    assert buy.total == D("14814.78")  # 2,469.13 x 6
    # 14,814.78 / 12 = 1,234.565 exactly: half up gives 1,234.57 (half-even would give .56).
    assert str(buy.monthly) == "1234.57"


def test_three_months_at_33_33_cost_99_99_and_100_over_three_months_shows_33_33() -> None:
    options = tco_options(
        quantity=1,
        purchase_price=D("100.00"),
        purchase_provider="Acme Direct",
        offers=[offer("lease", "33.33", provider="LeaseCo", term=3)],
        costs=NO_SERVICE_COSTS,
        term_months=3,
    )
    assert [(o.option, str(o.total), str(o.monthly), o.cheapest) for o in options] == [
        ("buy", "100.00", "33.33", False),  # 100.00 / 3 = 33.333...: the total stays 100.00
        ("lease", "99.99", "33.33", True),  # 33.33 x 3 = 99.99, 99.99 / 3 = 33.33
    ]


# ------------------------------------------------------------------ money


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (D("33.33") * 3, "99.99"),  # 3 x 33.33 = 99.99, not 100.00
        (D("100.00") / 3, "33.33"),  # 33.333... rounds down
        (D("200.00") / 3, "66.67"),  # 66.666... rounds up
        (D("14814.78") / 12, "1234.57"),  # 1,234.565: half up
        (D("14814.66") / 12, "1234.56"),  # 1,234.555: half up too (half-even would agree)
        (D("1004.40") - D("1004.40"), "0.00"),  # never -0.00
        (D("27.90") * 36, "1004.40"),
    ],
)
def test_money_rounds_every_figure_the_same_way(value: Decimal, expected: str) -> None:
    assert str(money(value)) == expected


# ------------------------------------------------------------------ the late-involvement ledger


def entries(lines: list[LineFacts], *, missed: bool, rates: LateCosts = ARTICLE) -> list[Any]:
    return [
        (e.kind, e.devices_incurred, str(e.incurred), e.devices_avoided, str(e.avoided))
        for e in ledger(lines, missed_planning=missed, rates=rates)
    ]


def test_the_articles_late_case_costs_24000_for_100_devices() -> None:
    # 100 devices ordered individually though an agreement covered them, with no agreement
    # whose terms are complete, after the order-by date.
    late = [LineFacts(100, "individual", False, True, False)]
    assert entries(late, missed=True) == [
        ("unclear_terms", 100, "9000.00", 0, "0.00"),  # 90 x 100
        ("individual_order", 100, "7000.00", 0, "0.00"),  # 70 x 100
        ("missed_delivery_planning", 100, "8000.00", 0, "0.00"),  # 80 x 100
    ]
    rows = ledger(late, missed_planning=True, rates=ARTICLE)
    assert sum(e.incurred for e in rows) == D("24000.00")  # 9,000 + 7,000 + 8,000
    assert sum(e.avoided for e in rows) == D("0.00")


def test_the_early_case_incurs_nothing_and_avoids_24000() -> None:
    # The same 100 devices under a framework agreement with complete terms, ordered in time.
    early = [LineFacts(100, "framework", True, True, False)]
    assert entries(early, missed=False) == [
        ("unclear_terms", 0, "0.00", 100, "9000.00"),  # 90 x 100
        ("individual_order", 0, "0.00", 100, "7000.00"),  # 70 x 100
        ("missed_delivery_planning", 0, "0.00", 100, "8000.00"),  # 80 x 100
    ]
    rows = ledger(early, missed_planning=False, rates=ARTICLE)
    assert sum(e.incurred for e in rows) == D("0.00")
    assert sum(e.avoided for e in rows) == D("24000.00")  # 9,000 + 7,000 + 8,000


def test_a_mixed_request_counts_each_line_where_it_belongs() -> None:
    lines = [
        LineFacts(40, "framework", True, True, False),  # complete terms
        LineFacts(25, "framework", False, True, False),  # an agreement missing a term
        LineFacts(10, "individual", False, True, False),  # an agreement was there
        LineFacts(5, "individual", False, False, False),  # nothing to order it under
        LineFacts(3, "individual", False, False, True),  # could have been bundled
    ]
    assert entries(lines, missed=False) == [
        # not under complete terms: 25 + 10 + 5 + 3 = 43 x 90 = 3,870; complete: 40 x 90 = 3,600
        ("unclear_terms", 43, "3870.00", 40, "3600.00"),
        # alone where an agreement or bundling was possible: 10 + 3 = 13 x 70 = 910;
        # framework: 40 + 25 = 65 x 70 = 4,550; the 5 nobody could do better for: neither
        ("individual_order", 13, "910.00", 65, "4550.00"),
        # in time: all 40 + 25 + 10 + 5 + 3 = 83 x 80 = 6,640 avoided
        ("missed_delivery_planning", 0, "0.00", 83, "6640.00"),
    ]


@pytest.mark.parametrize(
    ("bundling_possible", "expected"),
    [
        (False, ("individual_order", 0, "0.00", 0, "0.00")),  # nothing better was possible
        (True, ("individual_order", 12, "840.00", 0, "0.00")),  # 70 x 12
    ],
)
def test_an_individual_order_without_any_agreement_counts_only_if_it_could_have_been_bundled(
    bundling_possible: bool, expected: tuple[Any, ...]
) -> None:
    lines = [LineFacts(12, "individual", False, False, bundling_possible)]
    assert entries(lines, missed=False)[1] == expected


@pytest.mark.parametrize(
    ("combined_price", "better"),
    [
        (None, False),  # no agreement prices the units together
        ("899.00", False),  # together, no lower than this line's own price
        ("949.00", False),
        ("879.00", True),  # a tier below this line's price: bundling was the better order
    ],
)
def test_bundling_is_a_missed_chance_only_where_ordering_together_reaches_a_better_price(
    combined_price: str | None, better: bool
) -> None:
    saving = (
        D("0.00") if combined_price is None else max(D("0.00"), D("899.00") - D(combined_price))
    )
    chance = BundlingChance(
        "LAPTOP-STD-14",
        ("PR-0002",),
        30,
        55,
        D("899.00"),
        None if combined_price is None else D(combined_price),
        saving * 30,
    )
    assert chance.better_price is better


def test_a_missed_order_by_date_costs_every_device_of_the_request() -> None:
    lines = [
        LineFacts(7, "framework", True, True, False),
        LineFacts(2, "individual", False, False, False),
    ]
    assert entries(lines, missed=True)[2] == (
        "missed_delivery_planning",
        9,  # 7 + 2
        "720.00",  # 80 x 9
        0,
        "0.00",
    )


def test_the_ledger_uses_the_pipelines_own_rates() -> None:
    rates = LateCosts(
        unclear_terms=D("112.50"),
        individual_order=D("66.67"),
        missed_delivery_planning=D("33.33"),
    )
    lines = [LineFacts(3, "individual", False, True, False)]
    rows = ledger(lines, missed_planning=True, rates=rates)
    assert [(e.kind, e.per_device, str(e.incurred)) for e in rows] == [
        ("unclear_terms", D("112.50"), "337.50"),  # 112.50 x 3
        ("individual_order", D("66.67"), "200.01"),  # 66.67 x 3
        ("missed_delivery_planning", D("33.33"), "99.99"),  # 33.33 x 3
    ]
    assert sum(e.incurred for e in rows) == D("637.50")  # 337.50 + 200.01 + 99.99


def test_the_ledger_names_its_three_sources_in_a_fixed_order() -> None:
    rows = ledger([], missed_planning=True, rates=ARTICLE)
    assert [e.kind for e in rows] == list(KINDS)
    assert [e.label for e in rows] == [LABELS[k] for k in KINDS]
    assert [(e.devices_incurred, e.devices_avoided, e.incurred, e.avoided) for e in rows] == [
        (0, 0, D("0.00"), D("0.00"))
    ] * 3
    assert [e.per_device for e in rows] == [D("90.00"), D("70.00"), D("80.00")]


# ------------------------------------------------------------------ fiscal years and budgets


@pytest.mark.parametrize(
    ("day", "start_month", "expected"),
    [
        (date(2027, 1, 1), 1, 2027),
        (date(2027, 12, 31), 1, 2027),
        (date(2027, 3, 31), 4, 2026),  # before April: still the year that began 1 April 2026
        (date(2027, 4, 1), 4, 2027),
        (date(2027, 1, 15), 4, 2026),
        (date(2027, 12, 31), 4, 2027),
        (date(2026, 11, 30), 12, 2025),
        (date(2026, 12, 1), 12, 2026),
    ],
)
def test_the_fiscal_year_is_named_by_the_calendar_year_it_starts_in(
    day: date, start_month: int, expected: int
) -> None:
    assert fiscal_year(day, start_month) == expected
    start, end = fiscal_range(expected, start_month)
    assert start <= day < end


@pytest.mark.parametrize(
    ("year", "start_month", "expected"),
    [
        (2026, 1, (date(2026, 1, 1), date(2027, 1, 1))),
        (2026, 4, (date(2026, 4, 1), date(2027, 4, 1))),
        (2026, 12, (date(2026, 12, 1), date(2027, 12, 1))),
    ],
)
def test_the_fiscal_range_runs_from_its_first_day_to_the_first_day_of_the_next(
    year: int, start_month: int, expected: tuple[date, date]
) -> None:
    assert fiscal_range(year, start_month) == expected


def budget(amount: str | None, committed: str, spent: str, request_total: str) -> BudgetStatus:
    return BudgetStatus(
        "CC-ENG",
        2026,
        None if amount is None else D(amount),
        D(committed),
        D(spent),
        D(request_total),
        "warn",
    )


@pytest.mark.parametrize(
    ("status", "remaining", "exceeds"),
    [
        # 50,000.00 - 12,345.67 - 20,000.01 = 17,654.32
        (budget("50000.00", "12345.67", "20000.01", "17654.32"), "17654.32", False),  # exactly
        (budget("50000.00", "12345.67", "20000.01", "17654.33"), "17654.32", True),  # 1 cent over
        (budget("50000.00", "0.00", "0.00", "0.00"), "50000.00", False),
        # 1,000.00 - 600.00 - 500.00 = -100.00: overspent before this request
        (budget("1000.00", "600.00", "500.00", "0.01"), "-100.00", True),
        (budget(None, "12345.67", "20000.01", "99999999.99"), None, False),  # no budget set
    ],
)
def test_the_budget_remainder_and_whether_a_request_exceeds_it(
    status: BudgetStatus, remaining: str | None, exceeds: bool
) -> None:
    assert status.remaining == (None if remaining is None else D(remaining))
    assert status.exceeds is exceeds


# ------------------------------------------------------------------ contract terms


def agreement(agreement_id: int, code: str, **terms: Any) -> FrameworkAgreement:
    """An agreement with all four terms settled, unless terms overrides some."""
    values: dict[str, Any] = {
        "sla_terms": "next business day on site",
        "warranty_months": 36,
        "return_terms": "collected within 10 days",
        "erasure_clause": "certified erasure, NIST 800-88",
        **terms,
    }
    return FrameworkAgreement(
        id=agreement_id,
        code=code,
        name=code,
        supplier_id=1,
        valid_from=date(2026, 1, 1),
        valid_to=date(2027, 12, 31),
        **values,
    )


@pytest.mark.parametrize(
    ("terms", "missing"),
    [
        ({}, []),
        ({"warranty_months": None}, ["warranty"]),
        ({"warranty_months": 0}, []),  # zero months is a warranty term, stated
        ({"sla_terms": ""}, ["sla"]),
        ({"return_terms": ""}, ["returns"]),
        ({"erasure_clause": ""}, ["erasure"]),
        (
            {"warranty_months": None, "sla_terms": "", "return_terms": "", "erasure_clause": ""},
            ["warranty", "sla", "returns", "erasure"],
        ),
    ],
)
def test_an_agreement_names_the_terms_it_leaves_open(
    terms: dict[str, Any], missing: list[str]
) -> None:
    assert agreement(1, "FA-1", **terms).missing_terms() == missing


def line(line_no: int, agreement_id: int | None) -> RequestLine:
    return RequestLine(
        id=line_no,
        request_id=1,
        line_no=line_no,
        item_id=1,
        sku="LAPTOP-STD-14",
        quantity=1,
        unit_price=D("949.00"),
        total=D("949.00"),
        sourcing="individual" if agreement_id is None else "framework",
        agreement_id=agreement_id,
    )


COMPLETE = agreement(1, "FA-COMPLETE")
NO_ERASURE = agreement(2, "FA-NO-ERASURE", erasure_clause="")
NO_SLA = agreement(3, "FA-NO-SLA", sla_terms="")
AGREEMENTS = {a.id: a for a in (COMPLETE, NO_ERASURE, NO_SLA) if a.id is not None}


def settled_by(source: str, *names: str) -> dict[str, Any]:
    return {name: {"by": "agreement", "source": source} for name in names}


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([], {}, id="no-lines"),
        pytest.param(
            [line(1, 1)],
            settled_by("FA-COMPLETE", "warranty", "sla", "returns", "erasure"),
            id="one-complete-agreement",
        ),
        pytest.param(
            [line(1, 1), line(2, 1)],
            settled_by("FA-COMPLETE", "warranty", "sla", "returns", "erasure"),
            id="two-lines-one-agreement-named-once",
        ),
        pytest.param(
            [line(1, 1), line(2, 2)],
            settled_by("FA-COMPLETE, FA-NO-ERASURE", "warranty", "sla", "returns"),
            id="a-term-one-agreement-leaves-open-stays-open",
        ),
        pytest.param(
            [line(1, 3), line(2, 2)],
            settled_by("FA-NO-ERASURE, FA-NO-SLA", "warranty", "returns"),
            id="two-incomplete-agreements-sorted-by-code",
        ),
        pytest.param([line(1, 1), line(2, None)], {}, id="a-line-without-agreement"),
        pytest.param([line(1, 1), line(2, 99)], {}, id="an-agreement-not-loaded"),
    ],
)
def test_the_terms_every_lines_agreement_settles_start_confirmed(
    lines: list[RequestLine], expected: dict[str, Any]
) -> None:
    assert terms_from_agreements(lines, AGREEMENTS) == expected


def test_the_terms_checklist_shows_what_is_confirmed_and_what_is_missing() -> None:
    assert terms_view({}) == {"confirmed": {}, "missing": ["warranty", "sla", "returns", "erasure"]}
    from_agreements = terms_from_agreements([line(1, 1), line(2, 2)], AGREEMENTS)
    by_person = {"by": "paul.purchasing@example.com", "source": "joint review"}
    view = terms_view({**from_agreements, "erasure": by_person, "colour": "blue"})
    assert view == {
        "confirmed": {
            "warranty": {"by": "agreement", "source": "FA-COMPLETE, FA-NO-ERASURE"},
            "sla": {"by": "agreement", "source": "FA-COMPLETE, FA-NO-ERASURE"},
            "returns": {"by": "agreement", "source": "FA-COMPLETE, FA-NO-ERASURE"},
            "erasure": by_person,
        },
        "missing": [],
    }
    assert terms_view(from_agreements)["missing"] == ["erasure"]


@pytest.mark.parametrize(
    ("buckets", "median"),
    [
        ([(10, 1), (20, 1)], 1.5),  # two decisions, 1 h and 2 h: halfway, not the lower one
        ([(0, 1), (10, 1)], 0.5),
        ([(10, 1), (20, 1), (690, 1)], 2.0),  # an odd count: the middle one
        ([(30, 4)], 3.0),
        ([], None),
    ],
)
def test_the_cycle_time_median_of_an_even_count_is_halfway_between_the_middle_two(
    buckets: list[tuple[int, int]], median: float | None
) -> None:
    from models.reports import _median

    assert _median(buckets, sum(n for _, n in buckets)) == median
