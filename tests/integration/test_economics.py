"""The money at every decision, on SQLite and PostgreSQL: framework agreements and their volume
tiers, sourcing at submission, call-offs, buy/lease/DaaS, the delivery plan, the late-involvement
ledger of the article's two requests, the joint-review terms checklist, budgets, quotes, role
bundles, demand bundling and the reports.

The sample org and catalog are in every database; the sample agreement (FA-2026-NORDIC:
LAPTOP-STD-14 at 899.00 for 1-49 units, 879.00 for 50-199, 859.00 from 200; MON-27 at 269.00 /
255.00 from 50; DOCK-USB4 at 199.00; complete terms; 2,000 units committed; supplier NORDIC-IT
with 10 days lead time) is loaded by the `agreed` fixture (a fresh database per test) and in
the `shared` database (one per backend for the tests that only read, refuse bad input or add
requests of their own).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from models import actions, digest, pipeline, reports
from models.assets import SerialIn
from models.catalog import (
    AgreementPrice,
    Bundle,
    BundleItem,
    CallOff,
    FrameworkAgreement,
    Item,
    Offer,
    Supplier,
    load_catalog,
    read_catalog_file,
)
from models.db import make_engine, transaction
from models.economics import LedgerEntry
from models.errors import InputError, RuleViolation
from models.org import Budget, CostCentre, load_org, read_org_file
from models.outbox import Notification
from notifications.context import ContextBuilder, Links
from notifications.render import Renderer
from sample import AGREEMENTS, CATALOG, ORG
from tests.factories import (
    BOB,
    HEADSETS,
    IDA,
    IVAN,
    NOW,
    PAUL,
    PETRA,
    RITA,
    SARA,
    TODAY,
    approve_all,
    audit_rows,
    decide,
    install_edited_pipeline,
    load_catalog_path,
    load_org_data,
    row_counts,
    show,
    stage_rounds,
    submit,
)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def d(value: str) -> Decimal:
    return Decimal(value)


def in_days(days: int) -> str:
    return (TODAY + timedelta(days=days)).isoformat()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def agreed(engine: Engine) -> Engine:
    """The sample database with the sample framework agreement loaded."""
    load_catalog_path(engine, AGREEMENTS)
    return engine


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """One sample database per backend, with the sample agreement, shared by the module's tests
    that write nothing or only requests of their own. Each such test gives its requests content
    of their own (a justification naming the test), so no two tests' submissions coincide."""
    from tests.conftest import Databases

    dbs = Databases(request.param, request, tmp_path_factory.mktemp("economics"))
    try:
        engine = make_engine(dbs.url("sample"))
        dbs.engines.append(engine)
        load_catalog_path(engine, AGREEMENTS)
        yield engine
    finally:
        dbs.close()


def order(engine: Engine, ref: str, now: datetime = NOW) -> dict[str, Any]:
    with transaction(engine) as session:
        return actions.place_order(session, ref=ref, actor_email=PAUL, now=now)


def ledger_rows(engine: Engine, ref: str) -> list[tuple[Any, ...]]:
    """(kind, devices incurred, devices avoided, per device, incurred, avoided) as frozen."""
    with transaction(engine, readonly=True) as session:
        rows = session.exec(
            select(LedgerEntry)
            .where(LedgerEntry.request_id == int(ref[3:]))
            .order_by(col(LedgerEntry.id))
        ).all()
    return [
        (r.kind, r.devices_incurred, r.devices_avoided, r.per_device, r.incurred, r.avoided)
        for r in rows
    ]


def sourcing_of(detail: dict[str, Any]) -> list[tuple[str, int, str, str | None, str]]:
    """(sku, quantity, mode, agreement, unit price) per line."""
    return [
        (s["sku"], s["quantity"], s["mode"], s["agreement"], s["unit_price"])
        for s in detail["sourcing"]
    ]


# ------------------------------------------------------------------ loading


def test_loading_the_sample_agreement_creates_its_tiers_and_loading_it_again_changes_nothing(
    engine: Engine,
) -> None:
    first = load_catalog_path(engine, AGREEMENTS)
    assert first["agreement"] == {"created": 1, "updated": 0, "unchanged": 0}
    with transaction(engine, readonly=True) as session:
        agreement = session.exec(select(FrameworkAgreement)).one()
        tiers = session.exec(
            select(
                Item.sku,
                AgreementPrice.min_quantity,
                AgreementPrice.max_quantity,
                AgreementPrice.unit_price,
            )
            .join(Item, col(Item.id) == col(AgreementPrice.item_id))
            .order_by(col(Item.sku), col(AgreementPrice.min_quantity))
        ).all()
        price_ids = session.exec(select(AgreementPrice.id).order_by(col(AgreementPrice.id))).all()
    assert (agreement.code, agreement.valid_from, agreement.valid_to) == (
        "FA-2026-NORDIC",
        date(2026, 1, 1),
        date(2027, 12, 31),
    )
    assert agreement.committed_volume == 2000 and agreement.currency == "EUR"
    assert agreement.warranty_months == 36 and agreement.missing_terms() == []
    assert [tuple(t) for t in tiers] == [
        ("DOCK-USB4", 1, None, d("199.00")),
        ("LAPTOP-STD-14", 1, 49, d("899.00")),
        ("LAPTOP-STD-14", 50, 199, d("879.00")),
        ("LAPTOP-STD-14", 200, None, d("859.00")),
        ("MON-27", 1, 49, d("269.00")),
        ("MON-27", 50, None, d("255.00")),
    ]
    before = row_counts(engine)
    again = load_catalog_path(engine, AGREEMENTS)
    assert again["agreement"] == {"created": 0, "updated": 0, "unchanged": 1}
    assert row_counts(engine) == before  # no row and no audit event more
    with transaction(engine, readonly=True) as session:
        assert (
            session.exec(select(AgreementPrice.id).order_by(col(AgreementPrice.id))).all()
            == price_ids
        )


def test_the_sample_offers_bundles_and_budgets_are_loaded_and_loading_them_again_changes_nothing(
    engine: Engine,
) -> None:
    with transaction(engine, readonly=True) as session:
        offers = session.exec(
            select(Item.sku, Offer, Supplier.code)
            .join(Item, col(Item.id) == col(Offer.item_id))
            .join(Supplier, col(Supplier.id) == col(Offer.supplier_id))
            .order_by(col(Item.sku), col(Offer.kind))
        ).all()
        kits = session.exec(
            select(Bundle.code, Item.sku, BundleItem.quantity)
            .join(BundleItem, col(BundleItem.bundle_id) == col(Bundle.id))
            .join(Item, col(Item.id) == col(BundleItem.item_id))
            .where(Bundle.code == "developer")
            .order_by(col(Item.sku))
        ).all()
        budgets = session.exec(
            select(CostCentre.code, Budget.fiscal_year, Budget.amount)
            .join(CostCentre, col(CostCentre.id) == col(Budget.cost_centre_id))
            .order_by(col(CostCentre.code), col(Budget.fiscal_year))
        ).all()
    assert [
        (sku, o.kind, supplier, o.monthly_rate, o.term_months, o.includes(), o.buy_residual_value)
        for sku, o, supplier in offers
    ] == [
        ("LAPTOP-DEV-16", "daas", "DAAS-CO", d("62.00"), 36, ["rollout", "support", "return", "erasure"], d("300.00")),
        ("LAPTOP-STD-14", "daas", "DAAS-CO", d("33.50"), 36, ["rollout", "support", "return", "erasure"], d("120.00")),
        ("LAPTOP-STD-14", "lease", "NORDIC-IT", d("27.90"), 36, [], d("120.00")),
        ("PHONE-STD", "daas", "DAAS-CO", d("21.00"), 24, ["rollout", "support", "return", "erasure"], d("0.00")),
    ]  # fmt: skip
    assert [tuple(k) for k in kits] == [
        ("developer", "DOCK-USB4", 1),
        ("developer", "HEADSET-BT", 1),
        ("developer", "LAPTOP-DEV-16", 1),
        ("developer", "MON-27", 2),
    ]
    assert [tuple(b) for b in budgets] == [
        ("CC-ENG", 2026, d("250000.00")),
        ("CC-ENG", 2027, d("260000.00")),
        ("CC-IT", 2026, d("400000.00")),
        ("CC-IT", 2027, d("400000.00")),
        ("CC-SALES", 2026, d("80000.00")),
        ("CC-SALES", 2027, d("85000.00")),
    ]
    before = row_counts(engine)
    tallies = load_catalog_path(engine, CATALOG)
    assert tallies["offer"] == {"created": 0, "updated": 0, "unchanged": 4}
    assert tallies["bundle"] == {"created": 0, "updated": 0, "unchanged": 3}
    with transaction(engine) as session:
        org, doc = read_org_file(ORG)
        assert load_org(session, org=org, doc=doc, actor="tests", at=NOW)["budget"] == {
            "created": 0,
            "updated": 0,
            "unchanged": 6,
        }
    assert row_counts(engine) == before


# ------------------------------------------------------------------ bad catalog files

# A valid file that adds a supplier, an item, an agreement, an offer and a bundle: each case
# below changes one passage, and then none of it may be loaded.
GOOD_CATALOG = """\
suppliers:
  - {code: ACME, name: Acme Peripherals, lead_time_days: 7}
items:
  - {sku: ACME-KB, name: Keyboard, category: accessory, list_price: 49.00, currency: EUR, supplier: ACME}
agreements:
  - code: FA-ACME
    name: Acme keyboards
    supplier: ACME
    valid_from: 2026-01-01
    valid_to: 2026-12-31
    currency: EUR
    prices:
      - sku: ACME-KB
        tiers:
          - {from: 1, to: 9, unit_price: 45.00}
          - {from: 10, unit_price: 42.00}
offers:
  - {sku: ACME-KB, kind: lease, provider: ACME, monthly_rate: 2.00, term_months: 24}
bundles:
  - {code: typist, name: Typist, items: [{sku: ACME-KB}]}
"""


@dataclass(frozen=True)
class BadCatalog:
    old: str  # the passage of GOOD_CATALOG to change
    new: str
    field: str
    fragment: str
    at: str | None = None  # the text on the line the problem names (default: the new passage)


BAD_CATALOGS = {
    "a tier table with a gap": BadCatalog(
        "{from: 10, unit_price: 42.00}",
        "{from: 20, unit_price: 42.00}",
        "agreements[0].prices[0].tiers[1].from",
        "leaves a gap: units 10 to 19 have no price",
    ),
    "a tier table that starts at 2": BadCatalog(
        "{from: 1, to: 9, unit_price: 45.00}",
        "{from: 2, to: 9, unit_price: 45.00}",
        "agreements[0].prices[0].tiers[0].from",
        "tiers must start at 1 (the first starts at 2)",
    ),
    "a tier table with an overlap": BadCatalog(
        "{from: 10, unit_price: 42.00}",
        "{from: 5, unit_price: 42.00}",
        "agreements[0].prices[0].tiers[1].from",
        "overlaps the tier before it (which runs to 9)",
    ),
    "a tier that ends before it starts": BadCatalog(
        "{from: 10, unit_price: 42.00}",
        "{from: 10, to: 5, unit_price: 42.00}",
        "agreements[0].prices[0].tiers[1].to",
        "ends (5) before it starts (10)",
    ),
    "an agreement that ends before it starts": BadCatalog(
        "valid_to: 2026-12-31",
        "valid_to: 2025-12-31",
        "agreements[0].valid_to",
        "ends (2025-12-31) before it starts (2026-01-01)",
    ),
    "a negative tier price": BadCatalog(
        "{from: 1, to: 9, unit_price: 45.00}",
        "{from: 1, to: 9, unit_price: -45.00}",
        "agreements[0].prices[0].tiers[0].unit_price",
        "must not be negative",
    ),
    "a negative list price": BadCatalog(
        "list_price: 49.00", "list_price: -49.00", "items[0].list_price", "must not be negative"
    ),
    "a negative monthly rate": BadCatalog(
        "monthly_rate: 2.00",
        "monthly_rate: -2.00",
        "offers[0].monthly_rate",
        "must not be negative",
    ),
    "an unknown agreement currency": BadCatalog(
        "    currency: EUR", "    currency: XYZ", "agreements[0].currency", "unknown currency 'XYZ'"
    ),
    "an agreement in another currency than its item": BadCatalog(
        "    currency: EUR",
        "    currency: USD",
        "agreements[0].prices[0].sku",
        "ACME-KB is priced in EUR, the agreement in USD",
        at="      - sku: ACME-KB",
    ),
    "an unknown item currency": BadCatalog(
        "currency: EUR, supplier",
        "currency: EURO, supplier",
        "items[0].currency",
        "unknown currency",
    ),
}


def test_the_good_catalog_file_loads(shared: Engine, tmp_path: Path) -> None:
    # The base of the bad files below is itself fine: only the changed passage is wrong.
    # (Loaded in a transaction that is rolled back, so the shared database stays without it.)
    catalog, doc = read_catalog_file(write(tmp_path / "good.yaml", GOOD_CATALOG))
    with Session(shared) as session:
        tallies = load_catalog(session, catalog=catalog, doc=doc, actor="tests", at=NOW)
        session.rollback()
    assert {kind: t["created"] for kind, t in tallies.items()} == {
        "supplier": 1,
        "item": 1,
        "agreement": 1,
        "offer": 1,
        "bundle": 1,
    }


@pytest.mark.parametrize("case", list(BAD_CATALOGS), ids=list(BAD_CATALOGS))
def test_a_bad_catalog_file_is_refused_with_file_line_and_field_and_nothing_is_loaded(
    shared: Engine, tmp_path: Path, case: str
) -> None:
    bad = BAD_CATALOGS[case]
    assert GOOD_CATALOG.count(bad.old) == 1, bad.old
    text = GOOD_CATALOG.replace(bad.old, bad.new)
    line = next(n for n, row in enumerate(text.splitlines(), start=1) if (bad.at or bad.new) in row)
    path = write(tmp_path / "bad.yaml", text)
    before = row_counts(shared)
    with pytest.raises(InputError) as caught:
        load_catalog_path(shared, path)
    problems = caught.value.problems
    listing = "\n".join(str(p) for p in problems)
    assert len(problems) == 1, listing
    (problem,) = problems
    assert (problem.source, problem.line, problem.field) == (str(path), line, bad.field), listing
    assert bad.fragment in problem.message, listing
    assert row_counts(shared) == before
    with transaction(shared, readonly=True) as session:
        assert session.exec(select(Supplier).where(Supplier.code == "ACME")).first() is None


# ------------------------------------------------------------------ sourcing at submission

TIERS = [
    # quantity: LAPTOP-STD-14 under FA-2026-NORDIC
    (1, "899.00"),
    (49, "899.00"),
    (50, "879.00"),
    (199, "879.00"),
    (200, "859.00"),
]


def test_a_line_defaults_to_the_framework_price_of_the_tier_its_quantity_falls_in(
    shared: Engine,
) -> None:
    got = []
    for quantity, _ in TIERS:
        ref = submit(
            shared,
            justification="tiers",
            kind="rollout",
            lines=[{"sku": "LAPTOP-STD-14", "quantity": quantity}],
        )
        detail = show(shared, ref)
        (line,) = detail["sourcing"]
        assert (line["mode"], line["agreement"]) == ("framework", "FA-2026-NORDIC"), quantity
        assert detail["total"] == str(Decimal(line["unit_price"]) * quantity), quantity
        assert line["list_price"] == "949.00" and line["justification"] == ""
        got.append((quantity, line["unit_price"]))
    assert got == TIERS


def test_a_named_agreement_is_used_and_one_that_cannot_supply_is_refused_naming_the_line(
    shared: Engine,
) -> None:
    ref = submit(
        shared,
        justification="named agreement",
        lines=[{"sku": "MON-27", "quantity": 50, "agreement": "FA-2026-NORDIC"}],
    )
    assert sourcing_of(show(shared, ref)) == [
        ("MON-27", 50, "framework", "FA-2026-NORDIC", "255.00")
    ]
    before = row_counts(shared)
    with pytest.raises(InputError) as caught:
        submit(
            shared,
            justification="named agreement",
            lines=[{"sku": "MON-27", "quantity": 1, "agreement": "FA-NONE"}],
        )
    (problem,) = caught.value.problems
    assert problem.field == "lines[0].agreement" and "FA-NONE cannot supply" in problem.message
    with pytest.raises(InputError) as caught:
        # HEADSET-BT has no price under the agreement
        submit(
            shared,
            justification="named agreement",
            lines=[{"sku": "HEADSET-BT", "quantity": 1, "agreement": "FA-2026-NORDIC"}],
        )
    (problem,) = caught.value.problems
    assert problem.field == "lines[0].agreement"
    assert row_counts(shared) == before


def test_an_individual_order_where_an_agreement_exists_needs_a_justification(
    shared: Engine,
) -> None:
    before = row_counts(shared)
    with pytest.raises(InputError) as caught:
        submit(
            shared,
            justification="individual order",
            lines=[{"sku": "LAPTOP-STD-14", "quantity": 2, "sourcing": "individual"}],
        )
    (problem,) = caught.value.problems
    assert problem.field == "lines[0].sourcing_justification"
    # 2 x (949.00 list - 899.00 framework) = 100.00
    assert (
        "FA-2026-NORDIC supplies this at 899.00 EUR a unit (ordered individually: 100.00 EUR "
        "more in total)" in problem.message
    )
    # Cheaper than the agreement, it is still outside it: a reason, with the sign read right.
    with pytest.raises(InputError) as caught:
        submit(
            shared,
            justification="individual order, cheaper",
            lines=[
                {
                    "sku": "LAPTOP-STD-14",
                    "quantity": 2,
                    "sourcing": "individual",
                    "unit_price": "850.00",
                }
            ],
        )
    assert "(ordered individually: 98.00 EUR less in total)" in caught.value.problems[0].message
    assert row_counts(shared) == before

    ref = submit(
        shared,
        justification="individual order",
        lines=[
            {
                "sku": "LAPTOP-STD-14",
                "quantity": 2,
                "sourcing": "individual",
                "sourcing_justification": "The team needs them before the distributor can deliver.",
            }
        ],
    )
    detail = show(shared, ref)
    (line,) = detail["sourcing"]
    assert (line["mode"], line["agreement"], line["unit_price"]) == ("individual", None, "949.00")
    assert (line["framework_agreement"], line["framework_price"]) == ("FA-2026-NORDIC", "899.00")
    assert line["difference"] == "100.00"
    assert line["justification"] == "The team needs them before the distributor can deliver."
    assert detail["total"] == "1898.00"


def test_an_item_no_agreement_covers_is_ordered_individually_without_a_justification(
    shared: Engine,
) -> None:
    ref = submit(shared, justification="no agreement", lines=[{"sku": "HEADSET-BT", "quantity": 3}])
    (line,) = show(shared, ref)["sourcing"]
    assert (line["mode"], line["unit_price"], line["framework_price"], line["difference"]) == (
        "individual",
        "129.00",
        None,
        None,
    )


# Agreements around today (2026-11-25), one per item, each at 40.00 against a list price of 50.00.
WINDOW_CATALOG = """\
items:
  - {sku: ACC-FUTURE, name: Starts tomorrow, category: accessory, list_price: 50.00, supplier: NORDIC-IT}
  - {sku: ACC-TODAY, name: Starts today, category: accessory, list_price: 50.00, supplier: NORDIC-IT}
  - {sku: ACC-EXPIRED, name: Ended yesterday, category: accessory, list_price: 50.00, supplier: NORDIC-IT}
  - {sku: ACC-LAST-DAY, name: Ends today, category: accessory, list_price: 50.00, supplier: NORDIC-IT}
  - {sku: ACC-SHORT, name: Five units committed, category: accessory, list_price: 50.00, supplier: NORDIC-IT}
agreements:
  - {code: FA-FUTURE, name: n, supplier: NORDIC-IT, valid_from: 2026-11-26, valid_to: 2027-12-31, prices: [{sku: ACC-FUTURE, tiers: [{from: 1, unit_price: 40.00}]}]}
  - {code: FA-TODAY, name: n, supplier: NORDIC-IT, valid_from: 2026-11-25, valid_to: 2027-12-31, prices: [{sku: ACC-TODAY, tiers: [{from: 1, unit_price: 40.00}]}]}
  - {code: FA-EXPIRED, name: n, supplier: NORDIC-IT, valid_from: 2025-01-01, valid_to: 2026-11-24, prices: [{sku: ACC-EXPIRED, tiers: [{from: 1, unit_price: 40.00}]}]}
  - {code: FA-LAST-DAY, name: n, supplier: NORDIC-IT, valid_from: 2025-01-01, valid_to: 2026-11-25, prices: [{sku: ACC-LAST-DAY, tiers: [{from: 1, unit_price: 40.00}]}]}
  - {code: FA-SHORT, name: n, supplier: NORDIC-IT, valid_from: 2026-01-01, valid_to: 2027-12-31, committed_volume: 5, prices: [{sku: ACC-SHORT, tiers: [{from: 1, unit_price: 40.00}]}]}
"""

WINDOW_CASES = [
    # sku, quantity, the agreement offered (None: ordered individually at the list price)
    ("ACC-FUTURE", 1, None),  # not yet valid
    ("ACC-TODAY", 1, "FA-TODAY"),  # valid from today
    ("ACC-EXPIRED", 1, None),  # ended yesterday
    ("ACC-LAST-DAY", 1, "FA-LAST-DAY"),  # valid to today
    ("ACC-SHORT", 5, "FA-SHORT"),  # exactly the committed volume
    ("ACC-SHORT", 6, None),  # more than the committed volume
]


def test_only_agreements_valid_today_with_enough_volume_left_are_offered(
    shared: Engine, tmp_path: Path
) -> None:
    load_catalog_path(shared, write(tmp_path / "window.yaml", WINDOW_CATALOG))
    ref = submit(
        shared,
        justification="window",
        kind="rollout",
        lines=[{"sku": sku, "quantity": quantity} for sku, quantity, _ in WINDOW_CASES],
    )
    assert sourcing_of(show(shared, ref)) == [
        (
            sku,
            quantity,
            "framework" if code else "individual",
            code,
            "40.00" if code else "50.00",
        )
        for sku, quantity, code in WINDOW_CASES
    ]
    for sku, quantity, code in (("ACC-EXPIRED", 1, "FA-EXPIRED"), ("ACC-SHORT", 6, "FA-SHORT")):
        with pytest.raises(InputError) as caught:
            submit(
                shared,
                justification="window",
                lines=[{"sku": sku, "quantity": quantity, "agreement": code}],
            )
        assert [p.field for p in caught.value.problems] == ["lines[0].agreement"], code


# ------------------------------------------------------------------ buy / lease / DaaS and the delivery plan


def test_an_offer_over_another_term_is_named_as_not_compared(shared: Engine) -> None:
    # The sample's phone DaaS runs 24 months; the comparison runs over the pipeline's 36.
    ref = submit(shared, justification="phones", lines=[{"sku": "PHONE-STD", "quantity": 3}])
    (tco,) = show(shared, ref)["tco"]
    assert [o["option"] for o in tco["options"]] == ["buy"]
    assert tco["other_terms"] == [{"option": "daas", "provider": "DaaS Company", "term_months": 24}]


def test_tco_compares_buy_lease_and_daas_with_capex_opex_and_a_monthly_figure(
    shared: Engine,
) -> None:
    ref = submit(
        shared,
        justification="tco",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 1}, {"sku": "MON-27", "quantity": 2}],
    )
    laptop, monitor = show(shared, ref)["tco"]
    options = {o["option"]: o for o in laptop["options"]}
    # Services per device over 36 months when not included:
    # rollout 60.00 + support 8.00 x 36 + return 40.00 + erasure 25.00 = 413.00.
    # buy:   899.00 framework price + 413.00 - 120.00 residual value = 1,192.00; / 36 = 33.11
    # lease: 27.90 x 36 = 1,004.40 + 413.00 = 1,417.40; / 36 = 39.37
    # DaaS:  33.50 x 36 = 1,206.00, everything included; / 36 = 33.50
    assert {
        k: (o["provider"], o["capex"], o["opex"], o["residual"], o["total"], o["monthly"], o["cheapest"])
        for k, o in options.items()
    } == {
        "buy": ("Nordic IT Distribution", "899.00", "413.00", "120.00", "1192.00", "33.11", True),
        "lease": ("Nordic IT Distribution", "0.00", "1417.40", "0.00", "1417.40", "39.37", False),
        "daas": ("DaaS Company", "0.00", "1206.00", "0.00", "1206.00", "33.50", False),
    }  # fmt: skip
    assert options["daas"]["includes"] == ["rollout", "support", "return", "erasure"]
    assert all(o["term_months"] == 36 for o in options.values())
    # No lease or DaaS offer for the monitor: buying is the only (and so the cheapest) option.
    # A monitor is a peripheral (economics.peripheral_categories): nobody rolls it out, supports
    # or erases it as a device, so it costs its price: 2 x 269.00 = 538.00; / 36 = 14.94
    (buy,) = monitor["options"]
    assert (buy["option"], buy["capex"], buy["opex"], buy["total"], buy["monthly"]) == (
        "buy",
        "538.00",
        "0.00",
        "538.00",
        "14.94",
    )
    assert buy["cheapest"] is True


def test_the_order_by_date_counts_back_the_longest_supplier_lead_time_and_preparation(
    shared: Engine,
) -> None:
    # needed 2026-12-23; DAAS-CO (PHONE-STD) 14 days > NORDIC-IT 10 days; 5 days preparation
    ref = submit(
        shared,
        justification="order-by date",
        needed_by=in_days(28),
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 1}, {"sku": "PHONE-STD", "quantity": 1}],
    )
    detail = show(shared, ref)
    assert detail["delivery"] == {
        "needed_by": "2026-12-23",
        "lead_time_days": 14,
        "preparation_days": 5,
        "order_by": "2026-12-04",  # 23 - 14 - 5
        "days_left": 9,
        "ordered_on": None,
        "missed": False,
    }
    assert detail["order_by"] == "2026-12-04"
    assert audit_rows(shared, ref, "submit")[0].details["late"] is False


def test_a_line_bought_at_a_quote_is_planned_with_the_quoted_suppliers_lead_time(
    shared: Engine,
) -> None:
    # needed 2026-12-23; NORDIC-IT 10 days, OEM-DIRECT 21 days; 5 days preparation
    ref = submit(
        shared,
        justification="quoted lead time",
        needed_by=in_days(28),
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 1}],
    )
    assert show(shared, ref)["delivery"]["order_by"] == "2026-12-08"  # 23 - 10 - 5

    def buy_at(supplier: str) -> dict[str, Any]:
        with transaction(shared) as session:
            quote = actions.record_quote(
                session, ref=ref, line_no=1, supplier=supplier, unit_price=d("900.00"),
                actor_email=PAUL, now=NOW,
            )  # fmt: skip
            actions.set_sourcing(
                session, ref=ref, line_no=1, actor_email=PAUL, quote_id=quote.id,
                justification="Cheaper this week.", now=NOW,
            )  # fmt: skip
        return dict(show(shared, ref)["delivery"])

    # A catalog supplier named by its code: its own lead time.
    direct = buy_at("OEM-DIRECT")
    assert (direct["lead_time_days"], direct["order_by"]) == (21, "2026-11-27")  # 23 - 21 - 5
    # A supplier outside the catalog has no lead time on file: the catalog supplier's counts.
    dealer = buy_at("Dealer Z")
    assert (dealer["lead_time_days"], dealer["order_by"]) == (10, "2026-12-08")


# ------------------------------------------------------------------ the article's two requests

LATE = {
    # IT specified everything; purchasing comes in when the devices are needed in 10 days.
    "kind": "rollout",
    "needed_by": in_days(10),
    "justification": "Rollout of 100 laptops to the new support floor.",
    "lines": [
        {
            "sku": "LAPTOP-STD-14",
            "quantity": 100,
            "sourcing": "individual",
            "sourcing_justification": "IT ordered from the distributor's web shop.",
        }
    ],
}
EARLY = {
    # The same 100 laptops, reviewed together early: under the agreement, needed in 60 days.
    "kind": "rollout",
    "needed_by": in_days(60),
    "justification": "Rollout of 100 laptops to the new support floor, planned together.",
    "lines": [{"sku": "LAPTOP-STD-14", "quantity": 100}],
}


def test_the_articles_late_request_is_flagged_and_costs_24000_the_early_one_nothing_frozen_at_order(
    agreed: Engine, tmp_path: Path
) -> None:
    late, early = submit(agreed, **LATE), submit(agreed, **EARLY)
    # The late request is flagged at submission as past its order-by date.
    # late: needed 2026-12-05 - 10 days lead time - 5 days preparation = 2026-11-20, 5 days ago
    # early: needed 2027-01-24 - 15 days = 2027-01-09, 45 days ahead
    assert [show(agreed, ref)["delivery"]["order_by"] for ref in (late, early)] == [
        "2026-11-20",
        "2027-01-09",
    ]
    assert show(agreed, late)["delivery"]["days_left"] == -5
    assert show(agreed, late)["delivery"]["missed"] is True
    assert show(agreed, early)["delivery"]["missed"] is False
    assert [audit_rows(agreed, ref, "submit")[0].details["late"] for ref in (late, early)] == [
        True,
        False,
    ]
    with transaction(agreed, readonly=True) as session:
        flagged = session.exec(
            select(Notification.request_id, Notification.audience).where(
                Notification.event == "order_by_missed"
            )
        ).all()
    assert [tuple(f) for f in flagged] == [(int(late[3:]), "team:purchasing")]
    # Purchasing's weekly digest lists it (not only counts it) until it is ordered.
    with transaction(agreed, readonly=True) as session:
        _, spec = pipeline.active(session)
        sections = digest.team_digest(session, "purchasing", spec=spec, now=NOW)["sections"]
    past = sections["past_order_by"]
    assert (past["count"], [item["id"] for item in past["items"]]) == (1, [late])

    # Before the order the ledger is what it would be if ordered today.
    live = show(agreed, late)["ledger"]
    assert (live["frozen"], live["incurred"]) == (False, "24000.00")
    for ref in (late, early):
        approve_all(agreed, ref)
        order(agreed, ref)
    # late: 100 devices x 90.00 (no agreement with complete terms), x 70.00 (individual order
    # although FA-2026-NORDIC covered it), x 80.00 (ordered after its order-by date)
    late_rows = [
        ("unclear_terms", 100, 0, d("90.00"), d("9000.00"), d("0.00")),
        ("individual_order", 100, 0, d("70.00"), d("7000.00"), d("0.00")),
        ("missed_delivery_planning", 100, 0, d("80.00"), d("8000.00"), d("0.00")),
    ]
    # early: every device avoided each cost
    early_rows = [
        ("unclear_terms", 0, 100, d("90.00"), d("0.00"), d("9000.00")),
        ("individual_order", 0, 100, d("70.00"), d("0.00"), d("7000.00")),
        ("missed_delivery_planning", 0, 100, d("80.00"), d("0.00"), d("8000.00")),
    ]
    assert ledger_rows(agreed, late) == late_rows
    assert ledger_rows(agreed, early) == early_rows
    assert sum(row[4] for row in late_rows) == d("24000.00")
    for ref, incurred, avoided in ((late, "24000.00", "0.00"), (early, "0.00", "24000.00")):
        ledger = show(agreed, ref)["ledger"]
        assert (ledger["frozen"], ledger["incurred"], ledger["avoided"]) == (
            True,
            incurred,
            avoided,
        ), ref
    (ordered,) = audit_rows(agreed, late, "order")
    assert ordered.details["late_involvement"] == {
        "unclear_terms": "9000.00",
        "individual_order": "7000.00",
        "missed_delivery_planning": "8000.00",
    }

    # Afterwards the agreement loses its erasure clause and a month passes: computed afresh the
    # early request would now count unclear terms, but its ledger stays as it was ordered.
    frozen_rows = {ref: ledger_rows(agreed, ref) for ref in (late, early)}
    text = AGREEMENTS.read_text(encoding="utf-8")
    assert text.count("      erasure: NIST") == 1
    changed = write(
        tmp_path / "agreements.yaml",
        text.replace("      erasure: NIST 800-88 purge with a certificate per device\n", ""),
    )
    assert load_catalog_path(agreed, changed)["agreement"]["updated"] == 1
    again = submit(agreed, **{**EARLY, "justification": "The same 100 laptops, a month later."})
    assert show(agreed, again)["ledger"]["entries"][0]["incurred"] == "9000.00"  # 100 x 90.00
    later = NOW + timedelta(days=30)
    for ref in (late, early):
        assert ledger_rows(agreed, ref) == frozen_rows[ref]
        ledger = show(agreed, ref, now=later)["ledger"]
        assert ledger["frozen"] is True
        assert [(e["kind"], e["incurred"]) for e in ledger["entries"]] == [
            (kind, str(incurred)) for kind, _, _, _, incurred, _ in frozen_rows[ref]
        ]


def test_docks_and_headsets_rolled_out_with_the_laptops_are_not_counted_as_devices(
    agreed: Engine,
) -> None:
    # The article's late rollout, with a dock and a headset for each of the 100 laptops, all
    # bought individually: still 100 devices, so still 24,000.00.
    kit = {
        **LATE,
        "justification": "Rollout of 100 laptops with docks and headsets.",
        "lines": [
            *LATE["lines"],
            {"sku": "DOCK-USB4", "quantity": 100, "sourcing": "individual",
             "sourcing_justification": "From the web shop, with the laptops."},
            {"sku": "HEADSET-BT", "quantity": 100},
        ],
    }  # fmt: skip
    ref = submit(agreed, **kit)
    ledger = show(agreed, ref)["ledger"]
    assert [(e["kind"], e["devices"], e["incurred"]) for e in ledger["entries"]] == [
        ("unclear_terms", 100, "9000.00"),
        ("individual_order", 100, "7000.00"),
        ("missed_delivery_planning", 100, "8000.00"),
    ]
    assert ledger["incurred"] == "24000.00"
    assert ledger["peripherals"] == [
        {"line": 2, "sku": "DOCK-USB4", "category": "dock", "quantity": 100},
        {"line": 3, "sku": "HEADSET-BT", "category": "accessory", "quantity": 100},
    ]
    # Nor do they carry a device's rollout, support, return and erasure in buy vs lease.
    tco = {t["sku"]: t["options"][0] for t in show(agreed, ref)["tco"]}
    assert [(sku, o["option"], o["opex"]) for sku, o in tco.items()] == [
        ("LAPTOP-STD-14", "buy", "41300.00"),  # 100 x 413.00
        ("DOCK-USB4", "buy", "0.00"),
        ("HEADSET-BT", "buy", "0.00"),
    ]

    # An organisation that counts every unit says so in its pipeline; the ledger follows.
    text = pipeline.DEFAULT_PIPELINE.read_text(encoding="utf-8")
    key, version = "\n  fiscal_year_start_month: 1\n", "\nversion: 1\n"
    assert text.count(key) == 1 and text.count(version) == 1
    every = text.replace(key, key + "  peripheral_categories: []\n").replace(
        version, "\nversion: 2\n"
    )
    with transaction(agreed) as session:
        pipeline.install(session, text=every, source="every-unit.yaml", actor="tests", at=NOW)
    # A request keeps the pipeline it was submitted under; the next one is counted per unit.
    assert show(agreed, ref)["ledger"]["incurred"] == "24000.00"
    again = submit(agreed, **{**kit, "justification": "The same kit, every unit counted."})
    ledger = show(agreed, again)["ledger"]
    assert ledger["peripherals"] == []
    # 300 units: 27,000.00 + 14,000.00 + 24,000.00. Ordered alone: the laptops and docks an
    # agreement covers (200), not the headsets: bought with the first request's, no agreement
    # prices them either.
    assert [(e["kind"], e["devices"], e["incurred"]) for e in ledger["entries"]] == [
        ("unclear_terms", 300, "27000.00"),
        ("individual_order", 200, "14000.00"),
        ("missed_delivery_planning", 300, "24000.00"),
    ]


def test_peripheral_categories_must_be_catalog_codes() -> None:
    text = pipeline.DEFAULT_PIPELINE.read_text(encoding="utf-8")
    key = "\n  fiscal_year_start_month: 1\n"
    bad = text.replace(key, key + "  peripheral_categories: [dock, 'a headset!']\n")
    with pytest.raises(InputError) as err:
        pipeline.parse_pipeline(bad, source="bad.yaml")
    message = str(err.value)
    assert "bad.yaml" in message and "peripheral_categories" in message, message
    assert "letters, digits" in message, message


# ------------------------------------------------------------------ call-offs


def headsets(engine: Engine, quantity: int, label: str) -> str:
    return submit(
        engine,
        kind="rollout",
        justification=f"{quantity} headsets for {label}",
        lines=[{"sku": "HEADSET-BT", "quantity": quantity}],
    )


def test_a_call_off_draws_down_the_committed_volume_and_an_order_beyond_it_is_refused(
    engine: Engine, tmp_path: Path
) -> None:
    load_catalog_path(engine, write(tmp_path / "headsets.yaml", HEADSETS))
    first, second = headsets(engine, 6, "team A"), headsets(engine, 6, "team B")
    assert first != second
    # Both fit the 10 committed units when submitted: each is sourced under the agreement.
    for ref in (first, second):
        assert sourcing_of(show(engine, ref)) == [
            ("HEADSET-BT", 6, "framework", "FA-HEADSET", "99.00")
        ]
        approve_all(engine, ref)
    order(engine, first)
    with transaction(engine, readonly=True) as session:
        call_offs = session.exec(
            select(
                FrameworkAgreement.code, CallOff.request_id, CallOff.quantity, CallOff.unit_price
            ).join(FrameworkAgreement, col(FrameworkAgreement.id) == col(CallOff.agreement_id))
        ).all()
    assert [tuple(c) for c in call_offs] == [("FA-HEADSET", int(first[3:]), 6, d("99.00"))]
    # 4 units are left: a new request for 4 is offered the agreement, one for 5 is not.
    assert sourcing_of(show(engine, headsets(engine, 4, "team C")))[0][2:4] == (
        "framework",
        "FA-HEADSET",
    )
    assert sourcing_of(show(engine, headsets(engine, 5, "team D")))[0][2:5] == (
        "individual",
        None,
        "129.00",
    )

    before = row_counts(engine)
    with pytest.raises(RuleViolation, match="FA-HEADSET has 4 units left, the order calls off 6"):
        order(engine, second)
    assert row_counts(engine) == before
    assert show(engine, second)["status"] == "approved"


# ------------------------------------------------------------------ the joint-review terms checklist


def test_final_approval_waits_for_purchasing_to_confirm_the_terms_of_an_individual_order(
    engine: Engine,
) -> None:
    ref = submit(engine)  # no agreement loaded: the laptop is ordered individually
    assert show(engine, ref)["terms"] == {
        "confirmed": {},
        "missing": ["warranty", "sla", "returns", "erasure"],
        "confirm_by": {
            "role": "purchasing",
            "people": [PAUL, PETRA],
            "delegates": [],
            "escalated": None,
        },
    }
    decide(engine, ref, IDA)
    decide(engine, ref, PAUL, confirm_terms=False)
    before = row_counts(engine)
    with pytest.raises(RuleViolation, match="still open: warranty, sla, returns, erasure"):
        decide(engine, ref, BOB)
    assert row_counts(engine) == before

    with pytest.raises(RuleViolation, match="needs the role purchasing"), transaction(engine) as s:
        actions.confirm_terms(s, ref=ref, actor_email=IDA, now=NOW)
    with transaction(engine) as session:
        partly = actions.confirm_terms(
            session,
            ref=ref,
            actor_email=PAUL,
            names=["warranty", "sla"],
            note="36 months, next business day",
            now=NOW,
        )
    assert partly["missing"] == ["returns", "erasure"]
    with pytest.raises(RuleViolation, match="still open: returns, erasure"):
        decide(engine, ref, BOB)
    with transaction(engine) as session:
        rest = actions.confirm_terms(session, ref=ref, actor_email=PETRA, now=NOW)
    assert rest["missing"] == []

    assert decide(engine, ref, BOB).request_status == "approved"
    terms = show(engine, ref)["terms"]
    assert {name: v["by"] for name, v in terms["confirmed"].items()} == {
        "warranty": PAUL,
        "sla": PAUL,
        "returns": PETRA,
        "erasure": PETRA,
    }
    assert [e.details["terms"] for e in audit_rows(engine, ref, "terms_confirmed")] == [
        ["warranty", "sla"],
        ["returns", "erasure"],
    ]


def test_confirming_terms_reports_the_terms_it_confirmed_now_and_those_still_open(
    shared: Engine,
) -> None:
    # No agreement covers HEADSET-BT: every term is open.
    ref = submit(
        shared, justification="terms reported", lines=[{"sku": "HEADSET-BT", "quantity": 1}]
    )
    results = []
    for who, names in ((PAUL, ["warranty", "sla"]), (PETRA, None), (PAUL, None)):
        with transaction(shared) as session:
            results.append(
                actions.confirm_terms(session, ref=ref, actor_email=who, names=names, now=NOW)
            )
    # `procure terms` prints "confirmed <these>" (or "nothing new") from the first list.
    assert [(r["confirmed"], r["missing"]) for r in results] == [
        (["warranty", "sla"], ["returns", "erasure"]),
        (["returns", "erasure"], []),
        ([], []),
    ]


def test_framework_lines_under_complete_terms_start_with_the_checklist_complete(
    shared: Engine,
) -> None:
    ref = submit(shared, justification="terms by agreement")
    by_agreement = {"by": "agreement", "source": "FA-2026-NORDIC"}
    assert show(shared, ref)["terms"] == {
        "confirmed": dict.fromkeys(("warranty", "sla", "returns", "erasure"), by_agreement),
        "missing": [],
        "confirm_by": None,  # nothing left to confirm
    }
    decide(shared, ref, IDA)
    decide(shared, ref, PAUL, confirm_terms=False)
    assert decide(shared, ref, BOB).request_status == "approved"
    # One line outside the agreement leaves every term to purchasing.
    mixed = submit(
        shared,
        justification="terms by agreement",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 1}, {"sku": "HEADSET-BT", "quantity": 1}],
    )
    assert show(shared, mixed)["terms"]["missing"] == ["warranty", "sla", "returns", "erasure"]


# ------------------------------------------------------------------ budgets

TINY = {
    "cost_centres": [
        {
            "code": "CC-TINY",
            "name": "Tiny project",
            "budget_owner": BOB,
            "budgets": {2026: "1000.00"},
        }
    ]
}


def two_laptops(engine: Engine, **overrides: Any) -> str:
    # 2 x 899.00 under the agreement = 1,798.00, more than CC-TINY's 1,000.00
    return submit(
        engine,
        cost_centre="CC-TINY",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 2}],
        **overrides,
    )


def capsys_text(printing: Any) -> str:
    """What a CLI printer writes, as text."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        printing()
    return out.getvalue()


def test_over_budget_under_warn_approves_records_it_and_tells_finance(agreed: Engine) -> None:
    load_org_data(agreed, TINY)
    ref = two_laptops(agreed)
    assert show(agreed, ref)["budget"] == {
        "cost_centre": "CC-TINY",
        "fiscal_year": 2026,
        "amount": "1000.00",
        "committed": "0.00",
        "spent": "0.00",
        "remaining": "1000.00",
        "this_request": "1798.00",
        "counted": False,
        "overspent": False,
        "exceeds": True,
        "policy": "warn",
    }
    assert approve_all(agreed, ref)["status"] == "approved"
    figures = {
        "cost_centre": "CC-TINY",
        "fiscal_year": 2026,
        "budget": "1000.00",
        "remaining": "1000.00",
        "request_total": "1798.00",
        "remaining_after": "-798.00",
    }
    (warning,) = audit_rows(agreed, ref, "budget_exceeded")
    assert warning.details == figures
    with transaction(agreed, readonly=True) as session:
        told = session.exec(
            select(Notification).where(Notification.event == "budget_exceeded")
        ).all()
        assert [(t.audience, t.context) for t in told] == [("team:finance", figures)]
        # Sent after the approval, when the request counts as committed: the notice still says
        # the figures of the approval, the same in its message and its budget lines.
        links = Links("https://procure.example.com", b"economics-tests-key-0123456789abcdef", NOW)
        message = Renderer().render(
            "budget_exceeded", ContextBuilder(session, links).build(told[0])
        )
    assert (
        f"{ref} (€1,798.00) is approved and goes over what is left of the FY2026 budget of "
        "CC-TINY: €1,000.00 of €1,000.00." in message.text
    )
    assert (
        "Budget CC-TINY FY2026 at the approval: €1,000.00 left of €1,000.00, this request "
        "€1,798.00, -€798.00 left after it" in message.text
    ), message.text
    assert "€0.00" not in message.text and "€0.00" not in message.html
    assert "-€798.00</strong> left after it" in message.html

    # Committed on approval, spent on order.
    budget = show(agreed, ref)["budget"]
    assert (budget["committed"], budget["spent"], budget["remaining"]) == (
        "1798.00",
        "0.00",
        "-798.00",
    )
    # Counted in it now: its own total with that said, never "this request 0.00"; and no more
    # "exceeds" (it is in the figures), but the cost centre is overspent.
    assert (budget["this_request"], budget["counted"], budget["exceeds"]) == (
        "1798.00",
        True,
        False,
    )
    assert budget["overspent"] is True
    # As the CLI prints it (request show, request economics): overspent, not "exceeds".
    from procure.text import print_economics

    printed = capsys_text(lambda: print_economics(show(agreed, ref)))
    assert "remaining -798.00 EUR  OVERSPENT" in printed and "EXCEEDS" not in printed
    order(agreed, ref)
    budget = show(agreed, ref)["budget"]
    assert (budget["committed"], budget["spent"], budget["remaining"]) == (
        "0.00",
        "1798.00",
        "-798.00",
    )


def test_over_budget_under_stop_refuses_the_final_approval_and_writes_nothing(
    agreed: Engine,
) -> None:
    install_edited_pipeline(
        agreed, "stop.yaml", ("\n  budget_policy: warn\n", "\n  budget_policy: stop\n")
    )
    load_org_data(agreed, TINY)
    ref = two_laptops(agreed)
    assert show(agreed, ref)["budget"]["policy"] == "stop"
    decide(agreed, ref, IDA)
    decide(agreed, ref, PAUL)
    before = row_counts(agreed)
    with pytest.raises(
        RuleViolation, match=r"exceeds what is left of CC-TINY's 2026 budget \(1,000.00 EUR\)"
    ):
        decide(agreed, ref, BOB)
    assert row_counts(agreed) == before
    assert show(agreed, ref)["status"] == "in_review"
    # One laptop (899.00) fits the budget: the same pipeline approves it.
    fits = submit(agreed, cost_centre="CC-TINY", justification="One laptop.")
    assert approve_all(agreed, fits)["status"] == "approved"
    assert audit_rows(agreed, fits, "budget_exceeded") == []


# ------------------------------------------------------------------ quotes and re-sourcing


def test_purchasing_compares_quotes_and_switches_a_line_to_the_agreement_and_back_to_a_quote(
    agreed: Engine,
) -> None:
    ref = submit(
        agreed,
        kind="rollout",
        lines=[
            {
                "sku": "LAPTOP-STD-14",
                "quantity": 10,
                "sourcing": "individual",
                "sourcing_justification": "A local dealer was asked first.",
            }
        ],
    )
    assert show(agreed, ref)["total"] == "9490.00"  # 10 x 949.00 list price
    with transaction(agreed) as session:
        quote = actions.record_quote(
            session, ref=ref, line_no=1, supplier="Dealer A", unit_price=d("920.00"), actor_email=PAUL, now=NOW
        )  # fmt: skip
        actions.record_quote(
            session, ref=ref, line_no=1, supplier="Dealer B", unit_price=d("935.00"), actor_email=PETRA,
            valid_until=TODAY + timedelta(days=14), now=NOW,
        )  # fmt: skip
    (line,) = show(agreed, ref)["sourcing"]
    assert [(q["supplier"], q["unit_price"], q["total"], q["valid_until"]) for q in line["quotes"]] == [
        ("Dealer A", "920.00", "9200.00", None),
        ("Dealer B", "935.00", "9350.00", "2026-12-09"),
    ]  # fmt: skip

    before = row_counts(agreed)
    with pytest.raises(RuleViolation, match="needs the role purchasing"), transaction(agreed) as s:
        actions.set_sourcing(s, ref=ref, line_no=1, actor_email=IDA, agreement="FA-2026-NORDIC")
    with pytest.raises(RuleViolation, match="needs the role purchasing"), transaction(agreed) as s:
        actions.record_quote(
            s, ref=ref, line_no=1, supplier="Dealer C", unit_price=d("1.00"), actor_email=IVAN
        )
    assert row_counts(agreed) == before

    with transaction(agreed) as session:
        actions.set_sourcing(
            session, ref=ref, line_no=1, actor_email=PAUL, agreement="FA-2026-NORDIC", now=NOW
        )
    detail = show(agreed, ref)
    assert sourcing_of(detail) == [("LAPTOP-STD-14", 10, "framework", "FA-2026-NORDIC", "899.00")]
    assert detail["total"] == "8990.00" and detail["terms"]["missing"] == []

    before = row_counts(agreed)
    with pytest.raises(InputError) as caught, transaction(agreed) as session:
        actions.set_sourcing(session, ref=ref, line_no=1, actor_email=PAUL, quote_id=quote.id)
    assert [p.field for p in caught.value.problems] == ["--justification"]
    assert row_counts(agreed) == before

    with transaction(agreed) as session:
        actions.set_sourcing(
            session,
            ref=ref,
            line_no=1,
            actor_email=PAUL,
            quote_id=quote.id,
            justification="Dealer A delivers in two days.",
            now=NOW,
        )
    detail = show(agreed, ref)
    assert sourcing_of(detail) == [("LAPTOP-STD-14", 10, "individual", None, "920.00")]
    assert detail["lines"][0]["total"] == "9200.00" and detail["total"] == "9200.00"
    assert detail["sourcing"][0]["justification"] == (
        f"quote {quote.id} from Dealer A; Dealer A delivers in two days."
    )
    # Off the agreement, its terms no longer settle the checklist.
    assert detail["terms"]["missing"] == ["warranty", "sla", "returns", "erasure"]
    changes = [
        (
            e.actor,
            e.details["from"]["unit_price"],
            e.details["to"]["unit_price"],
            e.details["total"],
        )
        for e in audit_rows(agreed, ref, "sourcing")
    ]
    assert changes == [
        (PAUL, "949.00", "899.00", "8990.00"),
        (PAUL, "899.00", "920.00", "9200.00"),
    ]


def test_a_catalog_price_of_zero_is_refused_by_file_line_and_field(
    agreed: Engine, tmp_path: Path
) -> None:
    before = row_counts(agreed)
    for where, entry in [
        ("items[0].list_price", "items:\n  - {sku: CABLE-Z, name: Cable, category: accessory, list_price: 0.00, supplier: NORDIC-IT}\n"),
        ("offers[0].monthly_rate", "offers:\n  - {sku: LAPTOP-STD-14, kind: lease, provider: NORDIC-IT, monthly_rate: 0, term_months: 36}\n"),
    ]:  # fmt: skip
        with pytest.raises(InputError) as caught:
            load_catalog_path(agreed, write(tmp_path / "zero.yaml", entry))
        (problem,) = caught.value.problems
        assert (problem.line, problem.field) == (2, where)
        assert problem.message == "must be more than 0.00: a price is what something costs"
    assert row_counts(agreed) == before


def test_re_sourcing_individually_an_item_listed_at_zero_takes_its_list_price(
    agreed: Engine, tmp_path: Path
) -> None:
    # A request line may not be priced 0.00, nor may a catalog list an item at it now; an item
    # listed at 0.00 before that rule (here one an agreement sells at 5.00), ordered
    # individually, takes that list price.
    load_catalog_path(
        agreed,
        write(
            tmp_path / "free.yaml",
            """
            items:
              - {sku: CABLE-C, name: USB-C cable, category: accessory, list_price: 1.00, supplier: NORDIC-IT}
            agreements:
              - code: FA-CABLES
                name: Cables
                supplier: NORDIC-IT
                valid_from: 2026-01-01
                valid_to: 2027-12-31
                prices:
                  - sku: CABLE-C
                    tiers: [{from: 1, unit_price: 5.00}]
            """,
        ),
    )
    with transaction(agreed) as session:
        cable = session.exec(select(Item).where(Item.sku == "CABLE-C")).one()
        cable.list_price = Decimal("0.00")
        session.add(cable)
    ref = submit(agreed, justification="cables", lines=[{"sku": "CABLE-C", "quantity": 4}])
    with transaction(agreed) as session:
        actions.set_sourcing(
            session, ref=ref, line_no=1, actor_email=PAUL, individual=True,
            justification="Free from the shop.", now=NOW,
        )  # fmt: skip
    assert sourcing_of(show(agreed, ref)) == [("CABLE-C", 4, "individual", None, "0.00")]


def _quote_and_source(engine: Engine, ref: str, price: str) -> None:
    """Purchasing records a quote for line 1 and buys the line at it."""
    with transaction(engine) as session:
        quote = actions.record_quote(
            session, ref=ref, line_no=1, supplier="Dealer Z", unit_price=d(price),
            actor_email=PAUL, now=NOW,
        )  # fmt: skip
        actions.set_sourcing(
            session, ref=ref, line_no=1, actor_email=PAUL, quote_id=quote.id,
            justification="Only this dealer has them in stock.", now=NOW,
        )  # fmt: skip


def test_re_sourcing_in_the_joint_review_brings_in_the_approvals_the_new_total_needs(
    agreed: Engine,
) -> None:
    ref = submit(
        agreed, justification="re-sourced upwards", lines=[{"sku": "LAPTOP-STD-14", "quantity": 5}]
    )
    assert show(agreed, ref)["total"] == "4495.00"
    decide(agreed, ref, IDA)  # IT's half of the joint review, at 4,495.00
    assert stage_rounds(agreed, ref)["finance"] == ("skipped", 1)

    _quote_and_source(agreed, ref, "19000.00")  # 95,000.00 in total

    assert show(agreed, ref)["total"] == "95000.00"
    # Finance and management now apply; the joint review, where purchasing settles the
    # sourcing, keeps IT's approval.
    assert stage_rounds(agreed, ref) == {
        "joint_review": ("open", 1),
        "budget_owner": ("waiting", 1),
        "finance": ("waiting", 2),
        "management": ("waiting", 2),
    }
    decide(agreed, ref, PAUL)
    decide(agreed, ref, BOB)
    assert show(agreed, ref)["status"] == "in_review"
    assert stage_rounds(agreed, ref)["finance"] == ("open", 2)
    detail = approve_all(agreed, ref)
    assert detail["status"] == "approved"
    deciders = {s["stage"]: [x["by"] for x in s["decisions"]] for s in detail["stages"]}
    assert deciders["finance"] and deciders["management"]
    resets = [
        (e.details["reason"], e.details["total"])
        for e in audit_rows(agreed, f"{ref}/finance", "reset")
    ]
    assert resets == [("applies now: sourcing", "95000.00")]


def test_re_sourcing_after_an_approval_by_amount_has_that_stage_decide_again(
    agreed: Engine,
) -> None:
    ref = submit(
        agreed,
        justification="re-sourced after the budget owner",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 12}],
    )
    decide(agreed, ref, IDA)
    decide(agreed, ref, PAUL)
    decide(agreed, ref, BOB)
    assert stage_rounds(agreed, ref)["finance"] == ("open", 1)  # 10,788.00

    _quote_and_source(agreed, ref, "1000.00")  # 12,000.00: the budget owner approved less

    # Every stage that decided on the lines or the total decides again, in order: the joint
    # review (its inputs include the lines' prices) first.
    assert stage_rounds(agreed, ref) == {
        "joint_review": ("open", 2),
        "budget_owner": ("waiting", 2),
        "finance": ("waiting", 2),
        "management": ("skipped", 1),
    }
    before = row_counts(agreed)
    with pytest.raises(RuleViolation), transaction(agreed) as session:
        actions.decide(
            session, ref=ref, actor_email="fiona.finance@example.com", outcome="approve",
            stage_key="finance", now=NOW,
        )  # fmt: skip
    assert row_counts(agreed) == before
    decide(agreed, ref, IDA)
    decide(agreed, ref, PAUL)
    decide(agreed, ref, BOB)
    assert approve_all(agreed, ref)["status"] == "approved"
    # The budget owner was asked again: a second approval-needed notice, for round 2.
    with Session(agreed) as session:
        keys = session.exec(
            select(Notification.dedup_key).where(
                Notification.request_id == int(ref[3:]),
                Notification.event == "approval_needed",
                Notification.stage_id.is_not(None),  # type: ignore[union-attr]
            )
        ).all()
    assert any(f"{ref}/budget_owner/r2" in k for k in keys)


def test_re_sourcing_below_a_threshold_skips_the_stage_still_waiting(agreed: Engine) -> None:
    ref = submit(
        agreed,
        justification="re-sourced downwards",
        lines=[
            {
                "sku": "LAPTOP-STD-14",
                "quantity": 12,
                "sourcing": "individual",
                "sourcing_justification": "A local dealer was asked first.",
            }
        ],
    )
    assert stage_rounds(agreed, ref)["finance"] == ("waiting", 1)  # 12 x 949.00 = 11,388.00
    with transaction(agreed) as session:
        actions.set_sourcing(
            session, ref=ref, line_no=1, actor_email=PAUL, agreement="FA-2026-NORDIC", now=NOW
        )
    assert show(agreed, ref)["total"] == "10788.00"
    _quote_and_source(agreed, ref, "800.00")  # 9,600.00
    assert stage_rounds(agreed, ref)["finance"] == ("skipped", 1)
    assert approve_all(agreed, ref)["status"] == "approved"


def test_lines_are_ordered_from_and_reported_under_the_supplier_they_were_sourced_from(
    agreed: Engine,
) -> None:
    ref = submit(
        agreed,
        justification="three suppliers",
        lines=[
            {"sku": "LAPTOP-STD-14", "quantity": 1, "ownership": "daas"},
            {"sku": "MON-27", "quantity": 2},
            {"sku": "DOCK-USB4", "quantity": 1},
        ],
    )
    with transaction(agreed) as session:
        for line_no, supplier, price in ((2, "Dealer Z", "250.00"), (3, "DAAS-CO", "199.00")):
            quote = actions.record_quote(
                session, ref=ref, line_no=line_no, supplier=supplier, unit_price=d(price),
                actor_email=PAUL, now=NOW,
            )  # fmt: skip
            actions.set_sourcing(
                session, ref=ref, line_no=line_no, actor_email=PAUL, quote_id=quote.id,
                justification="Cheaper this week.", now=NOW,
            )  # fmt: skip
    # Buy vs lease vs DaaS names whom a bought line is bought from: the quote's supplier, not
    # the agreement's or the item's; for the DaaS line, buying is the alternative, from the
    # agreement that would supply it.
    buy = {t["line"]: t["options"][0] for t in show(agreed, ref)["tco"]}
    assert [(line, o["option"], o["provider"]) for line, o in buy.items()] == [
        (1, "buy", "Nordic IT Distribution"),
        (2, "buy", "Dealer Z"),
        (3, "buy", "DaaS Company"),
    ]
    approve_all(agreed, ref)
    with transaction(agreed) as session:
        placed = actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    orders = {
        (po["supplier"], po["name"]): [(ln["sku"], str(ln["unit_price"])) for ln in po["lines"]]
        for po in placed["purchase_orders"]
    }
    daas_line = show(agreed, ref)["lines"][0]
    # The DaaS line from its offer's provider; each quoted line from the quote's supplier (a
    # catalog supplier by code, or one purchasing named).
    assert orders == {
        ("DAAS-CO", "DaaS Company"): [
            ("LAPTOP-STD-14", daas_line["unit_price"]),
            ("DOCK-USB4", "199.00"),
        ],
        ("Dealer Z", "Dealer Z"): [("MON-27", "250.00")],
    }
    with transaction(agreed, readonly=True) as session:
        costs = reports.run("costs", session, start=None, end=None, now=NOW).as_dict()
    # A laptop and a dock from DAAS-CO (the dock no device), two monitors (no devices either).
    assert [(r["supplier"], r["name"], r["units"], r["devices"], r["spend"]) for r in costs["tables"]["by_supplier"]] == [
        ("DAAS-CO", "DaaS Company", 2, 1, str(d(daas_line["total"]) + d("199.00"))),
        ("Dealer Z", "Dealer Z", 2, 0, "500.00"),
    ]  # fmt: skip
    # Savings against list prices count the bought lines only: the DaaS line is a service.
    with transaction(agreed, readonly=True) as session:
        saved = reports.run("savings", session, start=None, end=None, now=NOW).as_dict()
    assert [(r["sourcing"], r["units"], r["devices"], r["paid"]) for r in saved["tables"]["by_sourcing"]] == [
        ("individual", 3, 0, "699.00")  # 2 x 250.00 + 199.00, at quotes: monitors and a dock
    ]  # fmt: skip


# ------------------------------------------------------------------ role bundles


def test_a_bundle_expands_into_the_role_kit_each_line_sourced_on_its_own(shared: Engine) -> None:
    ref = submit(shared, justification="bundle", bundle="developer", lines=[])
    detail = show(shared, ref)
    assert sourcing_of(detail) == [
        ("DOCK-USB4", 1, "framework", "FA-2026-NORDIC", "199.00"),
        ("HEADSET-BT", 1, "individual", None, "129.00"),
        ("LAPTOP-DEV-16", 1, "individual", None, "1899.00"),
        ("MON-27", 2, "framework", "FA-2026-NORDIC", "269.00"),
    ]
    assert detail["total"] == "2765.00"  # 199 + 129 + 1,899 + 2 x 269
    # The kit and extra lines together; an unknown bundle is named.
    both = submit(
        shared, justification="bundle", bundle="office", lines=[{"sku": "PHONE-STD", "quantity": 1}]
    )
    assert [ln["sku"] for ln in show(shared, both)["lines"]] == [
        "DOCK-USB4",
        "HEADSET-BT",
        "LAPTOP-STD-14",
        "MON-27",
        "PHONE-STD",
    ]
    before = row_counts(shared)
    with pytest.raises(InputError) as caught:
        submit(shared, justification="bundle", bundle="wizard", lines=[])
    assert [(p.field, p.message) for p in caught.value.problems] == [
        ("bundle", "unknown bundle wizard")
    ]
    assert row_counts(shared) == before


# ------------------------------------------------------------------ demand bundling


def laptops(engine: Engine, quantity: int, days: int) -> str:
    return submit(
        engine,
        kind="rollout",
        needed_by=in_days(days),
        justification=f"{quantity} laptops in {days} days",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": quantity}],
    )


def test_open_demand_for_the_same_item_within_the_window_is_shown_with_the_tier_reached_together(
    agreed: Engine,
) -> None:
    first = laptops(agreed, 30, 28)  # 899.00 alone
    second = laptops(agreed, 25, 35)  # 7 days later: inside the 30-day window; 899.00 alone
    far = laptops(agreed, 40, 90)  # 62 days after the first: outside
    withdrawn = laptops(agreed, 10, 30)
    with transaction(agreed) as session:
        actions.cancel(session, ref=withdrawn, actor_email=RITA, now=NOW)
    submit(agreed, lines=[{"sku": "MON-27", "quantity": 5}])  # another item
    # together 30 + 25 = 55 units reach the 50-199 tier: 879.00, 20.00 less a unit
    assert show(agreed, first)["bundling"] == [
        {
            "sku": "LAPTOP-STD-14",
            "with": [second],
            "quantity": 30,
            "combined_quantity": 55,
            "unit_price": "899.00",
            "combined_price": "879.00",
            "saving": "600.00",  # 30 x 20.00
        }
    ]
    (chance,) = show(agreed, second)["bundling"]
    assert (chance["with"], chance["saving"]) == ([first], "500.00")  # 25 x 20.00
    assert show(agreed, far)["bundling"] == []
    # Approved but not yet ordered is still open demand; ordered, it is not.
    approve_all(agreed, first)
    assert show(agreed, second)["bundling"][0]["with"] == [first]
    order(agreed, first)
    assert show(agreed, second)["bundling"] == []


def individual_order(engine: Engine, ref: str) -> tuple[int, str]:
    """The individual-order row of a request's ledger: (devices, incurred)."""
    (entry,) = [
        e for e in show(engine, ref)["ledger"]["entries"] if e["kind"] == "individual_order"
    ]
    return entry["devices"], entry["incurred"]


def test_demand_no_agreement_prices_is_no_missed_bundling_and_daas_demand_is_none_at_all(
    agreed: Engine,
) -> None:
    # No agreement covers PHONE-STD: alone, ordering it individually costs nothing extra.
    alone = submit(agreed, needed_by=in_days(100), lines=[{"sku": "PHONE-STD", "quantity": 3}])
    assert individual_order(agreed, alone) == (0, "0.00")
    # Phones as a service are a DaaS contract, not units to buy together with these.
    submit(
        agreed,
        needed_by=in_days(95),
        justification="phones as a service",
        lines=[{"sku": "PHONE-STD", "quantity": 2, "ownership": "daas"}],
    )
    assert show(agreed, alone)["bundling"] == []
    assert individual_order(agreed, alone) == (0, "0.00")
    # Other phones bought in the window: shown as bundling, but together they reach no
    # agreement price either, so ordering alone missed nothing.
    other = submit(agreed, needed_by=in_days(95), lines=[{"sku": "PHONE-STD", "quantity": 2}])
    (chance,) = show(agreed, alone)["bundling"]
    assert (chance["with"], chance["combined_quantity"], chance["combined_price"]) == (
        [other],
        5,
        None,
    )
    assert individual_order(agreed, alone) == (0, "0.00")


# ------------------------------------------------------------------ reports over a hand-built dataset


@dataclass
class Reported:
    engine: Engine
    refs: dict[str, str]


def _build_reported(engine: Engine) -> Reported:
    """Four requests, all submitted at NOW (Wednesday 2026-11-25 10:00 in Berlin):

    R1  CC-ENG    2 x LAPTOP-STD-14 + 1 x MON-27 under FA-2026-NORDIC: 1,798.00 + 269.00 = 2,067.00
        joint review decided after 2 h, budget owner after 2 h more; ordered Thu 26 Nov.
    R2  CC-SALES  1 x PHONE-STD individually (no agreement covers it; DAAS-CO): 649.00
        joint review after 3 h, budget owner (Sara) only on Sat 28 Nov 09:00 UTC, after its
        SLA (due Fri 27 Nov 10:00 UTC); ordered Sat 28 Nov.
    R3  CC-ENG    1 x LAPTOP-STD-14 individually, justified: 949.00, needed in 10 days (order by
        2026-11-20): joint review after 5 h, budget owner after 1 h more; ordered Mon 30 Nov.
    R4  CC-ENG    1 x DOCK-USB4, still in the joint review (due Thu 26 Nov 16:00 UTC).
    """
    load_catalog_path(engine, AGREEMENTS)
    refs = {
        "R1": submit(
            engine,
            justification="R1",
            lines=[{"sku": "LAPTOP-STD-14", "quantity": 2}, {"sku": "MON-27", "quantity": 1}],
        ),
        "R2": submit(
            engine,
            cost_centre="CC-SALES",
            justification="R2",
            lines=[{"sku": "PHONE-STD", "quantity": 1}],
        ),
        "R3": submit(
            engine,
            justification="R3",
            needed_by=in_days(10),
            lines=[
                {
                    "sku": "LAPTOP-STD-14",
                    "quantity": 1,
                    "sourcing": "individual",
                    "sourcing_justification": "Replacement needed at once.",
                }
            ],
        ),
        "R4": submit(engine, justification="R4", lines=[{"sku": "DOCK-USB4", "quantity": 1}]),
    }
    steps = [
        ("R1", IDA, NOW + 1 * HOUR),
        ("R1", PAUL, NOW + 2 * HOUR),
        ("R1", BOB, NOW + 4 * HOUR),
        ("R2", IDA, NOW + 1 * HOUR),
        ("R2", PAUL, NOW + 3 * HOUR),
        ("R2", SARA, NOW + 72 * HOUR),
        ("R3", IDA, NOW + 1 * HOUR),
        ("R3", PETRA, NOW + 5 * HOUR),
        ("R3", BOB, NOW + 6 * HOUR),
    ]
    for key, who, at in steps:
        decide(engine, refs[key], who, now=at)
    order(engine, refs["R1"], NOW + 1 * DAY)
    order(engine, refs["R2"], NOW + 73 * HOUR)
    order(engine, refs["R3"], NOW + 5 * DAY)
    return Reported(engine, refs)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def reported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reported]:
    from tests.conftest import Databases

    dbs = Databases(request.param, request, tmp_path_factory.mktemp("reports"))
    try:
        engine = make_engine(dbs.url("sample"))
        dbs.engines.append(engine)
        yield _build_reported(engine)
    finally:
        dbs.close()


def run_report(
    reported: Reported,
    name: str,
    start: date | None = None,
    end: date | None = None,
    now: datetime = NOW,
) -> dict[str, Any]:
    with transaction(reported.engine, readonly=True) as session:
        return reports.run(name, session, start=start, end=end, now=now).as_dict()


def test_the_report_dataset_is_as_described(reported: Reported) -> None:
    statuses = [show(reported.engine, ref)["status"] for ref in reported.refs.values()]
    assert statuses == ["ordered", "ordered", "ordered", "in_review"]


def test_costs_report_the_spend_of_ordered_requests_by_cost_centre_and_supplier(
    reported: Reported,
) -> None:
    data = run_report(reported, "costs")
    # CC-ENG: R1 2,067.00 + R3 949.00 = 3,016.00 over 2 + 1 + 1 units, of which R1's monitor is
    # no device (a peripheral: the ledger does not count it either); R4 is not ordered
    assert data["tables"]["by_cost_centre"] == [
        {"cost_centre": "CC-ENG", "name": "Engineering", "requests": 2, "units": 4, "devices": 3, "spend": "3016.00"},
        {"cost_centre": "CC-SALES", "name": "Sales", "requests": 1, "units": 1, "devices": 1, "spend": "649.00"},
    ]  # fmt: skip
    # R1 under the agreement (NORDIC-IT) and R3 from the item's supplier (NORDIC-IT); R2 DAAS-CO
    assert data["tables"]["by_supplier"] == [
        {"supplier": "NORDIC-IT", "name": "Nordic IT Distribution", "requests": 2, "units": 4, "devices": 3, "spend": "3016.00"},
        {"supplier": "DAAS-CO", "name": "DaaS Company", "requests": 1, "units": 1, "devices": 1, "spend": "649.00"},
    ]  # fmt: skip
    assert data["totals"] == {"spend": "3665.00", "requests": 3, "units": 5, "devices": 4}
    # Every unit a device when the pipeline says so (peripheral_categories: []).
    with transaction(reported.engine, readonly=True) as session:
        every = reports.costs(session, peripherals=[]).as_dict()
    assert every["totals"] == {"spend": "3665.00", "requests": 3, "units": 5, "devices": 5}


def test_savings_report_compares_what_was_paid_with_the_list_price_by_sourcing(
    reported: Reported,
) -> None:
    data = run_report(reported, "savings")
    # framework: list 2 x 949.00 + 289.00 = 2,187.00, paid 2,067.00: 120.00 saved, 5.5 %
    # individual: R2 649.00 + R3 949.00 = 1,598.00 at list price, nothing saved
    assert data["tables"]["by_sourcing"] == [
        {"sourcing": "framework", "units": 3, "devices": 2, "list": "2187.00", "paid": "2067.00", "saving": "120.00", "saving_percent": "5.5"},
        {"sourcing": "individual", "units": 2, "devices": 2, "list": "1598.00", "paid": "1598.00", "saving": "0.00", "saving_percent": "0.0"},
    ]  # fmt: skip
    # 120.00 / 3,785.00 = 3.17 %
    assert data["totals"] == {
        "list": "3785.00",
        "paid": "3665.00",
        "saving": "120.00",
        "saving_percent": "3.2",
    }


def test_risk_report_adds_up_the_frozen_ledgers_incurred_vs_avoided(reported: Reported) -> None:
    data = run_report(reported, "risk")
    rows = {r["kind"]: r for r in data["tables"]["by_kind"]}
    # R1's monitor is a peripheral, not a device: R1 counts its 2 laptops.
    # unclear terms: R2 and R3 (1 device each, no agreement) x 90.00; R1's 2 devices avoided
    # individual order: R3 (an agreement covered it) x 70.00; R1's 2 framework devices avoided;
    #                   R2 could neither use an agreement nor be bundled: neither
    # missed planning: R3 ordered after its order-by date x 80.00; R1's 2 + R2's 1 avoided
    assert {
        k: (r["requests"], r["devices_incurred"], r["incurred"], r["devices_avoided"], r["avoided"])
        for k, r in rows.items()
    } == {
        "unclear_terms": (3, 2, "180.00", 2, "180.00"),
        "individual_order": (3, 1, "70.00", 2, "140.00"),
        "missed_delivery_planning": (3, 1, "80.00", 3, "240.00"),
    }
    assert data["totals"] == {"incurred": "330.00", "avoided": "560.00", "requests": 3}


def test_cycle_times_count_decisions_open_stages_and_sla_breaches_at_a_fixed_now(
    reported: Reported,
) -> None:
    data = run_report(reported, "cycle-times", now=NOW)
    later = run_report(reported, "cycle-times", now=NOW + 7 * DAY)
    # joint review: R1, R2, R3 decided, R4 open (due Thu 26 Nov 16:00 UTC: breached a week later)
    # budget owner: R1, R2, R3 decided; R2 after its SLA
    counts = ("stage", "decided", "open", "sla_breaches")
    assert [tuple(r[k] for k in counts) for r in data["tables"]["by_stage"]] == [
        ("joint_review", 3, 1, 0),
        ("budget_owner", 3, 0, 1),
    ]
    assert data["totals"] == {"decided": 6, "sla_breaches": 1}
    assert [r["sla_breaches"] for r in later["tables"]["by_stage"]] == [1, 1]
    assert later["totals"] == {"decided": 6, "sla_breaches": 2}
    # joint review: 2 h (R1), 3 h (R2), 5 h (R3) -> mean 3.3, median 3.0, p90 5.0
    # budget owner: 2 h (R1), 69 h (R2: 12:00 UTC Wednesday to 09:00 UTC Saturday), 1 h (R3)
    #               -> mean 24.0, median 2.0, p90 69.0
    hours = ("mean_hours", "median_hours", "p90_hours")
    assert {r["stage"]: tuple(r[k] for k in hours) for r in data["tables"]["by_stage"]} == {
        "joint_review": (3.3, 3.0, 5.0),
        "budget_owner": (24.0, 2.0, 69.0),
    }


def test_a_stage_cancelled_with_its_request_is_no_decision_in_the_cycle_times(
    engine: Engine,
) -> None:
    decided = submit(engine, justification="decided after 2 hours")
    decide(engine, decided, IDA, now=NOW + 1 * HOUR)
    decide(engine, decided, PAUL, now=NOW + 2 * HOUR)
    cancelled = submit(engine, justification="cancelled after 63 hours")
    decide(engine, cancelled, IDA, now=NOW + 1 * HOUR)
    with transaction(engine) as session:
        actions.cancel(
            session, ref=cancelled, actor_email=RITA, reason="not needed", now=NOW + 63 * HOUR
        )
    with transaction(engine, readonly=True) as session:
        data = reports.run(
            "cycle-times", session, start=None, end=None, now=NOW + 64 * HOUR
        ).as_dict()
    (joint,) = [r for r in data["tables"]["by_stage"] if r["stage"] == "joint_review"]
    # One joint review decided in 2 hours; the cancelled one is neither decided nor open.
    assert (joint["decided"], joint["open"], joint["mean_hours"], joint["p90_hours"]) == (
        1,
        0,
        2.0,
        2.0,
    )


PERIODS = [
    # --from, --to: the requests ordered in it (R1 Thu 26, R2 Sat 28, R3 Mon 30 Nov)
    (date(2026, 11, 27), date(2026, 11, 29), {"CC-SALES": "649.00"}),
    (date(2026, 11, 27), None, {"CC-ENG": "949.00", "CC-SALES": "649.00"}),
    (None, date(2026, 11, 26), {"CC-ENG": "2067.00"}),
    (date(2026, 11, 26), date(2026, 11, 26), {"CC-ENG": "2067.00"}),
    (date(2026, 12, 1), None, {}),
]


@pytest.mark.parametrize(("start", "end", "spend"), PERIODS)
def test_from_and_to_keep_only_the_requests_ordered_in_the_period(
    reported: Reported, start: date | None, end: date | None, spend: dict[str, str]
) -> None:
    costs = run_report(reported, "costs", start, end)
    assert {r["cost_centre"]: r["spend"] for r in costs["tables"]["by_cost_centre"]} == spend
    assert costs["period"] == {
        "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None,
    }
    total = sum((Decimal(v) for v in spend.values()), Decimal("0.00"))
    assert run_report(reported, "savings", start, end)["totals"]["paid"] == str(total)


def test_the_period_filters_the_risk_and_cycle_time_reports_too(reported: Reported) -> None:
    # Only R2 was ordered on 27-29 Nov: 1 device, unclear terms 90.00; planning avoided 80.00.
    risk = run_report(reported, "risk", date(2026, 11, 27), date(2026, 11, 29))
    assert {r["kind"]: (r["requests"], r["incurred"], r["avoided"]) for r in risk["tables"]["by_kind"]} == {
        "unclear_terms": (1, "90.00", "0.00"),
        "individual_order": (1, "0.00", "0.00"),
        "missed_delivery_planning": (1, "0.00", "80.00"),
    }  # fmt: skip
    assert risk["totals"] == {"incurred": "90.00", "avoided": "80.00", "requests": 1}
    # Every stage opened on 25 Nov: a period from the 26th holds none of them.
    assert run_report(reported, "cycle-times", date(2026, 11, 25), date(2026, 11, 25))[
        "totals"
    ] == {"decided": 6, "sla_breaches": 1}
    assert run_report(reported, "cycle-times", date(2026, 11, 26), None)["tables"] == {
        "by_stage": []
    }


def test_the_risk_report_is_the_sum_of_the_ledgers_each_request_shows(reported: Reported) -> None:
    # The report is the sum of what each request shows as frozen at its order.
    total = sum(
        (
            Decimal(show(reported.engine, reported.refs[key])["ledger"]["incurred"])
            for key in ("R1", "R2", "R3")
        ),
        Decimal("0.00"),
    )
    assert str(total) == run_report(reported, "risk")["totals"]["incurred"] == "330.00"
    assert show(reported.engine, reported.refs["R4"])["ledger"]["frozen"] is False


def test_report_days_run_in_the_organisations_time_zone(engine: Engine) -> None:
    # Ordered at 23:30 UTC on 25 November: already 26 November in Berlin (UTC+1).
    late_evening = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
    ref = submit(engine, justification="ordered around midnight")
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=late_evening)
    berlin = ZoneInfo("Europe/Berlin")
    with transaction(engine, readonly=True) as session:
        on_26th = reports.costs(
            session, start=date(2026, 11, 26), end=date(2026, 11, 26), zone=berlin
        )
        on_25th = reports.costs(
            session, start=date(2026, 11, 25), end=date(2026, 11, 25), zone=berlin
        )
    assert on_26th.totals["requests"] == 1
    assert on_25th.totals["requests"] == 0


# ------------------------------------------------------------------ leased and DaaS lines


def test_a_daas_line_is_priced_from_the_cheapest_offer_and_settles_the_terms_it_includes(
    shared: Engine,
) -> None:
    ref = submit(
        shared,
        justification="daas line",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 10, "ownership": "daas"}],
    )
    detail = show(shared, ref)
    (line,) = detail["lines"]
    # the sample's DaaS offer: 33.50 a month x 36 months = 1,206.00 a device; x 10 = 12,060.00
    assert (line["unit_price"], line["total"], line["term_months"]) == ("1206.00", "12060.00", 36)
    assert detail["sourcing"][0]["mode"] == "offer"
    assert detail["sourcing"][0]["offer"]["includes"] == ["rollout", "support", "return", "erasure"]
    # support covers warranty and SLA; return and erasure are included: nothing left to confirm
    assert detail["terms"]["missing"] == []
    # a contracted service is neither unclear in its terms nor an individual order
    incurred = {e["kind"]: e["incurred"] for e in detail["ledger"]["entries"]}
    assert incurred["unclear_terms"] == "0.00" and incurred["individual_order"] == "0.00"


def test_purchasing_switches_a_line_to_a_lease_and_the_order_goes_to_the_lessor(
    agreed: Engine,
) -> None:
    ref = submit(agreed, lines=[{"sku": "LAPTOP-STD-14", "quantity": 2}])
    with transaction(agreed) as session:
        line = actions.set_sourcing(
            session, ref=ref, line_no=1, actor_email=PAUL, offer="lease", now=NOW
        )
        assert (line.ownership, line.term_months, line.sourcing) == ("leased", 36, "offer")
        # 27.90 a month x 36 months = 1,004.40 a device
        assert line.unit_price == d("1004.40")
    with (
        pytest.raises(InputError, match="no DaaS offer for MON-27"),
        transaction(agreed) as session,
    ):
        other = submit(
            agreed, justification="no daas for monitors", lines=[{"sku": "MON-27", "quantity": 1}]
        )
        actions.set_sourcing(session, ref=other, line_no=1, actor_email=PAUL, offer="daas", now=NOW)
    approve_all(agreed, ref)
    with transaction(agreed) as session:
        order = actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    assert [po["supplier"] for po in order["purchase_orders"]] == ["NORDIC-IT"]
    with transaction(agreed) as session:
        progress = actions.deliver(
            session, ref=ref, units=[SerialIn("L-1"), SerialIn("L-2")], now=NOW
        )
    assert progress.status == "delivered"
    leased = show(agreed, ref)["assets"]
    # delivered 2026-11-25 on a 36-month lease: the contract ends 2029-11-25
    assert {(a["ownership"], a["contract_end"]) for a in leased} == {("leased", "2029-11-25")}
    # Back at the end of the lease: erased, then to the lessor, never to a recycler.
    with transaction(agreed) as session:
        actions.roll_out(session, ref=ref, now=NOW)
        actions.request_return(session, serial="L-1", reason="Lease ends", now=NOW)
        actions.receive_return(session, serial="L-1", now=NOW)
        actions.erase(
            session, serial="L-1", certificate="C-L-1", method="NIST 800-88 purge",
            provider="Nordic", now=NOW,
        )  # fmt: skip
    with (
        pytest.raises(RuleViolation, match=r"L-1 is leased: it goes back to its provider"),
        transaction(agreed) as session,
    ):
        actions.dispose(session, serial="L-1", to="recycler", now=NOW)
    with transaction(agreed) as session:
        assert actions.dispose(session, serial="L-1", to="provider", now=NOW).status == (
            "returned_to_provider"
        )


def test_a_line_cannot_be_both_leased_and_priced_or_sourced_by_hand(shared: Engine) -> None:
    for extra, field in (
        ({"unit_price": "10.00"}, "lines[0].unit_price"),
        ({"sourcing": "framework"}, "lines[0].sourcing"),
    ):
        with pytest.raises(InputError) as caught:
            submit(
                shared,
                justification=f"leased with {field}",
                lines=[{"sku": "LAPTOP-STD-14", "quantity": 1, "ownership": "leased", **extra}],
            )
        assert [p.field for p in caught.value.problems] == [field]


def test_a_catalog_csv_says_which_items_hold_no_data(shared: Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path / "items.csv",
        """\
        sku,name,category,list_price,supplier,holds_data
        MOUSE-HOLDS-1,Mouse,accessory,19.00,NORDIC-IT,false
        STICK-HOLDS-1,USB stick,accessory,9.00,NORDIC-IT,true
        CABLE-HOLDS-1,Cable,accessory,5.00,NORDIC-IT,
        PAD-HOLDS-1,Mouse pad,accessory,5.00,NORDIC-IT,No
        DISK-HOLDS-1,Disk,accessory,55.00,NORDIC-IT,yes
        """,
    )
    load_catalog_path(shared, path)
    with transaction(shared, readonly=True) as session:
        rows = session.exec(
            select(Item.sku, Item.holds_data).where(col(Item.sku).like("%-HOLDS-1"))
        ).all()
    # An empty cell keeps the default: an item holds data unless its catalog says otherwise.
    # Yes and no read as in the organisation file, in any case.
    assert sorted(tuple(r) for r in rows) == [
        ("CABLE-HOLDS-1", True),
        ("DISK-HOLDS-1", True),
        ("MOUSE-HOLDS-1", False),
        ("PAD-HOLDS-1", False),
        ("STICK-HOLDS-1", True),
    ]
    # Anything else is refused naming the value, by file, line and field; nothing is loaded.
    bad = write(
        tmp_path / "items.yaml",
        """\
        items:
          - {sku: PEN-HOLDS-1, name: Pen, category: accessory, list_price: 1.00, supplier: NORDIC-IT, holds_data: nope}
        """,
    )
    before = row_counts(shared)
    with pytest.raises(InputError) as caught:
        load_catalog_path(shared, bad)
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (2, "items[0].holds_data")
    assert problem.message == "expected true or false (or yes/no, on/off, 1/0), not 'nope'"
    assert row_counts(shared) == before
