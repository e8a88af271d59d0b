"""`procure demo`: one onboarding request from submission to certified erasure, through the CLI.

Every step runs a real `procure` command against a fresh SQLite database in the output
folder and prints the command and what it answered, so the demo doubles as a tutorial.
"""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import typer

import sample
from notifications.sink import MailSink

RITA = "rita.requester@example.com"
IVAN = "ivan.it@example.com"
FIONA = "fiona.finance@example.com"
MAX = "max.management@example.com"
NINA = "nina.newhire@example.com"
IDA = "ida.it@example.com"
PAUL = "paul.purchasing@example.com"
HANNA = "hanna.hr@example.com"
BOB = "bob.budget@example.com"
CARL = "carl.deputy@example.com"


class Step:
    """Runs CLI commands in-process against the demo database, printing each like a terminal."""

    def __init__(self, db: Path):
        self.db = f"sqlite:///{db}"
        self.number = 0
        self.failures: list[str] = []

    def title(self, text: str) -> None:
        self.number += 1
        typer.echo(f"\n── {self.number}. {text}")

    def say(self, text: str) -> None:
        typer.echo(textwrap.fill(text, width=100, initial_indent="   ", subsequent_indent="   "))

    def run(self, *args: str, expect: int = 0) -> None:
        from procure.cli import main

        shown = " ".join(shlex.quote(a) for a in args)
        typer.echo(f"\n$ procure {shown}")
        code = main(["--db", self.db, *args])
        if code != expect:
            self.failures.append(f"`procure {shown}` exited {code}, expected {expect}")
            typer.echo(f"   !! exited {code}, expected {expect}")
        elif expect:
            typer.echo(f"   (exit {code}: refused, as it should be)")


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def run_demo(out: Path, today: date | None = None) -> int:
    """Run the scenario in `out` (a fresh database each time); returns 0 if every step behaved."""
    out.mkdir(parents=True, exist_ok=True)
    db = out / "procure.db"
    for stale in (db, out / "procure.db-wal", out / "procure.db-shm"):
        stale.unlink(missing_ok=True)
    from models.types import utcnow

    today = today or utcnow().date()
    step = Step(db)
    with _mail_server(out) as sink:
        code = _scenario(step, out, db, today)
        mails = len(sink.received)
    if code == 0:
        typer.echo(
            f"Every email the demo sent ({mails}) is in {out / 'mail'}/, as .eml (open it in a "
            "mail program) and .html (open it in a browser)."
        )
        typer.echo(
            f"Demo complete. Explore it yourself: procure --db sqlite:///{db} request show PR-0001"
        )
    return code


@contextmanager
def _mail_server(out: Path) -> Iterator[MailSink]:
    """A local SMTP server for the demo, and the routes that send every team and person to it
    (PROCURE_APPRISE_CONFIG for the demo's commands)."""
    import os

    folder = out / "mail"
    if folder.exists():
        for old in folder.iterdir():
            if old.suffix in (".eml", ".html"):
                old.unlink()
    with MailSink(folder) as sink:
        routes = write(
            out / "apprise.yml",
            "# Written by procure demo: every person and team, by email, to the demo's own\n"
            "# SMTP server (it keeps each message under mail/).\n" + sink.routes(),
        )
        saved = {k: os.environ.get(k) for k in ("PROCURE_APPRISE_CONFIG", "PROCURE_BASE_URL")}
        os.environ["PROCURE_APPRISE_CONFIG"] = str(routes)
        os.environ.setdefault("PROCURE_BASE_URL", "http://127.0.0.1:8000")
        try:
            yield sink
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _scenario(step: Step, out: Path, db: Path, today: date) -> int:
    typer.echo(
        "procure demo: an onboarding request from submission to certified erasure, then the "
        "article's 100-laptop rollout with purchasing involved late and early."
    )
    typer.echo(f"Database: {db} (SQLite, embedded). Files written to: {out}/")

    step.title("A fresh database with the sample organisation, catalog and the default pipeline")
    step.run("init", "--sample")
    step.run("pipeline", "show")

    step.title("This year's budget, a current framework agreement, and Bob away for two weeks")
    step.say(
        "Engineering gets its budget for the fiscal year; purchasing keeps the framework agreement "
        "with the distributor current; Bob, Engineering's budget owner, is away, so Carl decides on "
        "his behalf."
    )
    year = today.year
    organisation = write(
        out / "organisation.yaml",
        f"""
        cost_centres:
          - {{code: CC-ENG, name: Engineering, budget_owner: {BOB}, budgets: {{{year}: 250000.00, {year + 1}: 260000.00}}}}
        delegations:
          - {{delegator: {BOB}, delegate: {CARL}, from: {today}, to: {today + timedelta(days=14)}, reason: Conference}}
        """,
    )
    step.run("org", "load", str(organisation))
    agreement = write(
        out / "agreement.yaml",
        (sample.AGREEMENTS.read_text(encoding="utf-8"))
        .replace("FA-2026-NORDIC", f"FA-{year}-NORDIC")
        .replace("2026-01-01", f"{year}-01-01")
        .replace("2027-12-31", f"{year + 1}-12-31"),
    )
    step.run("catalog", "load", str(agreement))

    step.title("Rita asks for Nina's workplace: she starts in four weeks")
    request = write(
        out / "request.yaml",
        f"""
        kind: onboarding
        requester: {RITA}
        on_behalf_of: {NINA}
        cost_centre: CC-ENG
        needed_by: {today + timedelta(days=28)}
        justification: Nina joins the platform team as a developer.
        lines:
          - {{sku: LAPTOP-DEV-16, quantity: 1}}
          - {{sku: MON-27, quantity: 2}}
          - {{sku: DOCK-USB4, quantity: 1}}
        """,
    )
    step.run("request", "submit", str(request))
    step.say(
        "Submitting the same file again changes nothing: the request is recognised by its content."
    )
    step.run("request", "submit", str(request))
    step.run("request", "show", "PR-0001")

    step.title("Everyone involved hears of it: Rita, IT and purchasing, HR")
    step.say(
        "Each handoff queued its notifications in the same transaction; the dispatcher (a "
        "Prefect flow every minute once served) sends them. Here they go to the demo's own mail "
        "server. The approval emails carry approve / reject / send-back links, in the HTML and "
        "as plain URLs in the text part."
    )
    step.run("notify", "send")
    step.run("notify", "preview", "approval_needed", "--request", "PR-0001", "--to", PAUL)

    step.title("Joint review: IT and purchasing decide together")
    step.run("inbox", "--as", IDA)
    step.run(
        "decide",
        "PR-0001",
        "--as",
        IDA,
        "--approve",
        "--comment",
        "Spec fits the platform team's build.",
    )
    step.say("Rita cannot approve her own request:")
    step.run("decide", "PR-0001", "--as", RITA, "--approve", expect=1)
    step.run(
        "decide",
        "PR-0001",
        "--as",
        PAUL,
        "--send-back",
        "--comment",
        "The 14-inch standard laptop covers this role and keeps us in one order; please switch.",
    )

    step.title("Rita switches to the standard laptop and resubmits")
    change = write(
        out / "change.yaml",
        """
        lines:
          - {sku: LAPTOP-STD-14, quantity: 1}
          - {sku: MON-27, quantity: 2}
          - {sku: DOCK-USB4, quantity: 1}
        """,
    )
    step.run(
        "request",
        "resubmit",
        "PR-0001",
        str(change),
        "--as",
        RITA,
        "--comment",
        "Switched to the standard laptop.",
    )
    step.say("The lines changed, so the joint review decides again:")
    step.run("decide", "PR-0001", "--as", IDA, "--approve")
    step.run(
        "decide",
        "PR-0001",
        "--as",
        PAUL,
        "--approve",
        "--comment",
        "Warranty, returns and erasure terms confirmed.",
    )

    step.title("The budget owner's stage: Carl approves on Bob's behalf")
    step.run("notify", "send")
    step.run("inbox", "--as", CARL)
    step.run("decide", "PR-0001", "--as", CARL, "--approve")

    step.title("Purchasing orders; the supplier confirms a delivery date")
    step.run("order", "PR-0001", "--as", PAUL)
    step.run("schedule", "PR-0001", "--date", str(today + timedelta(days=12)), "--as", PAUL)

    step.title("Delivery: the devices arrive with their serial numbers")
    serials = write(
        out / "serials.csv",
        """
        serial,sku
        SN-LAP-0001,LAPTOP-STD-14
        SN-MON-0001,MON-27
        SN-MON-0002,MON-27
        SN-DOCK-0001,DOCK-USB4
        """,
    )
    step.run("deliver", "PR-0001", "--serials", str(serials), "--as", IDA)

    step.title("Rollout: IT hands everything to Nina, who confirms")
    step.run("rollout", "PR-0001", "--as", IDA)
    step.run("asset", "ack", "SN-LAP-0001", "--as", NINA)
    step.run("asset", "show", "SN-LAP-0001")

    step.title(
        "Nina leaves: HR asks for the devices back, IT collects them, the provider erases the laptop"
    )
    for serial in ("SN-MON-0001", "SN-MON-0002", "SN-DOCK-0001", "SN-LAP-0001"):
        step.run("asset", "request-return", serial, "--reason", "Leaver", "--as", HANNA)
        step.run("asset", "return", serial, "--as", IDA)
    step.say("The monitors and the dock hold no data (the catalog says so): back, they are done.")
    step.run("asset", "show", "SN-DOCK-0001")
    step.run(
        "asset",
        "erase",
        "SN-LAP-0001",
        "--certificate",
        "ERASE-SN-LAP-0001",
        "--method",
        "NIST 800-88 purge",
        "--provider",
        "DaaS Company",
        "--as",
        IDA,
    )
    step.say("With the laptop's certificate the request is closed. Its whole story:")
    step.run("request", "show", "PR-0001")

    _article(step, out, today)
    _orchestration(step, out, today)

    step.title("The audit trail is hash-chained: nothing was altered")
    step.run("audit", "verify")

    step.title(
        "Everything else due now, sent (the escalations dated three working days on wait for that day)"
    )
    step.run("notify", "send")
    step.run("notify", "status")

    typer.echo("")
    if step.failures:
        typer.echo("The demo did not go as expected:", err=True)
        for failure in step.failures:
            typer.echo(f"  - {failure}", err=True)
        return 1
    return 0


def _article(step: Step, out: Path, today: date) -> None:
    """The article's case: the same 100-laptop rollout with purchasing in late and in early."""
    step.title(
        "The article's rollout, twice: 100 laptops, purchasing involved late vs from the start"
    )
    step.say(
        "Late: IT has specified everything and agreed a price with the manufacturer; purchasing "
        "sees the request ten days before the laptops are needed. Early: the same rollout planned "
        "two months ahead, reviewed jointly, called off under the framework agreement."
    )
    late = write(
        out / "rollout-late.yaml",
        f"""
        kind: rollout
        requester: {IDA}
        cost_centre: CC-ENG
        needed_by: {today + timedelta(days=10)}
        justification: Windows 11 refresh of the engineering laptops.
        lines:
          - sku: LAPTOP-STD-14
            quantity: 100
            sourcing: individual
            sourcing_justification: IT agreed the price with the manufacturer before purchasing saw it.
        """,
    )
    early = write(
        out / "rollout-early.yaml",
        f"""
        kind: rollout
        requester: {IDA}
        cost_centre: CC-ENG
        needed_by: {today + timedelta(days=60)}
        justification: Windows 11 refresh of the engineering laptops.
        lines:
          - {{sku: LAPTOP-STD-14, quantity: 100}}
        """,
    )
    step.run("request", "submit", str(late))
    step.run("request", "submit", str(early))
    step.say(
        "Purchasing involved late: unclear terms, an individual order, the order-by date already past."
    )
    step.run("request", "economics", "PR-0002")
    step.say("Joint review from the start: framework price and terms, ordered in time.")
    step.run("request", "economics", "PR-0003")

    step.title(
        "Both go through joint review and approvals (the late one's terms confirmed by purchasing), then are ordered"
    )
    for ref in ("PR-0002", "PR-0003"):
        step.run("decide", ref, "--as", IVAN, "--approve")
        step.run("decide", ref, "--as", PAUL, "--approve", "--confirm-terms")
        step.run("decide", ref, "--as", CARL, "--approve")
        step.run("decide", ref, "--as", FIONA, "--approve")
        step.run("decide", ref, "--as", MAX, "--approve")
        step.run("order", ref, "--as", PAUL)

    step.title("What involving purchasing late cost: the report and its chart")
    chart = out / "late-involvement.png"
    step.run("report", "risk", "--chart", str(chart))
    step.say(
        "The late rollout's ledger, frozen when it was ordered: EUR 9,000 + 7,000 + 8,000 = "
        "EUR 24,000 incurred. The early one's: EUR 0 incurred, the same EUR 24,000 avoided. "
        "That difference is the article's figure. (The report also counts Nina's onboarding "
        f"request: 4 devices under the agreement, nothing incurred.) The chart: {chart}"
    )
    step.run("report", "savings")


def _orchestration(step: Step, out: Path, today: date) -> None:
    """The flows, run here with Prefect's temporary server: nothing to install."""
    import os

    # Prefect's own progress lines are for its UI; the demo prints what each flow returned.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    step.title(
        "Orchestration with Prefect on this machine: the HR sync, the SLA watchdog, a shipping notice"
    )
    step.say(
        "Each 'procure run' runs a flow in this process against Prefect's temporary server. "
        "Served ('procure serve'), the same flows run on their schedules, with every run, log "
        "and artifact in the Prefect UI."
    )
    start = today + timedelta(days=21)
    export = write(
        out / "hr-export.csv",
        f"""
        email,name,department,role,cost_centre,manager,start_date,end_date
        zoe.joiner@example.com,Zoë Joiner,Engineering,developer,CC-ENG,{RITA},{start},
        sam.seller@example.com,Sam Seller,Sales,sales,CC-SALES,sara.sales@example.com,{start},
        """,
    )
    step.say(
        "HR's export names two joiners: each gets an onboarding request with their role's kit."
    )
    step.run("run", "hr-sync", str(export))
    step.run("request", "show", "PR-0004")
    step.say(
        "The SLA watchdog finds nothing due yet; three working days later the joint reviews are "
        "past their 16 business hours and it escalates both:"
    )
    step.run("run", "sla-watchdog")
    later = _business_days_later(today, 3)
    os.environ["PROCURE_NOW"] = f"{later}T10:00:00+01:00"
    try:
        step.run("run", "sla-watchdog")
    finally:
        del os.environ["PROCURE_NOW"]
    notice = out / "shipping-notice.csv"
    notice.write_text(
        "request,serial\n" + "".join(f"PR-0003,NB-{n:04d}\n" for n in range(1, 101)),
        encoding="utf-8",
    )
    step.say(
        "The supplier's shipping notice for the early rollout: 100 laptops recorded and handed out in batches."
    )
    step.run("run", "delivery", "--serials", str(notice))
    step.run("request", "list", "--status", "rolled_out")


def _business_days_later(day: date, days: int) -> date:
    while days:
        day += timedelta(days=1)
        if day.weekday() < 5:
            days -= 1
    return day


def main(argv: Sequence[str] | None = None) -> int:
    return run_demo(Path(argv[0]) if argv else Path("demo-output"))
