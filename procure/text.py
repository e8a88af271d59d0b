"""Plain-text output of the CLI: requests, their money and their timelines, readable in a terminal."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import typer

from models.types import difference_text, moment_text, money_text


def listed(names: list[str], most: int = 5) -> str:
    """Names in a sentence, the first `most` of a long list and how many more ('PR-0002,
    PR-0003, PR-0004, PR-0005, PR-0006 and 95 more'): --json has them all."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most])} and {len(names) - most} more"


def clip(text: str, width: int) -> str:
    """A text cut to a column's width, with an ellipsis where it was cut ('Manufacturer dire…')."""
    return text if len(text) <= width else text[: width - 1] + "…"


def print_detail(d: dict[str, Any]) -> None:
    echo = typer.echo
    echo(f"{d['id']}  {d['status']}  ({d['kind']}, round {d['round']}, pipeline {d['pipeline']})")
    echo(
        f"  requester     {d['requester']}"
        + (f"   for {d['on_behalf_of']}" if d["on_behalf_of"] != d["requester"] else "")
    )
    echo(
        f"  cost centre   {d['cost_centre']}   needed by {d['needed_by']}"
        + (f"   delivery {d['delivery_on']}" if d["delivery_on"] else "")
    )
    moved = [e for e in d["timeline"] if e["action"] == "start_moved"]
    if moved and (moved[-1]["details"] or {}).get("to") != d["needed_by"]:
        # HR moved the joiner's start: the plan above still counts from the old date.
        echo(
            f"  start moved   HR moved the start to {moved[-1]['details']['to']}: needed-by and "
            "order-by still count from the old date; plan the delivery for the new one, or cancel "
            "the request (the next HR sync files one for the new date)"
        )
    arrived = sum(1 for a in d["assets"] if a["status"] != "ordered")
    if d["status"] in ("ordered", "delivery_scheduled") and arrived:
        # Part of it came: how much, and when the rest does (or that nobody agreed it yet).
        rest = len(d["assets"]) - arrived
        when = (
            f"the other {rest} {'is' if rest == 1 else 'are'} due {d['delivery_on']}"
            if d["delivery_on"]
            else f"no delivery date is agreed for the other {rest}: purchasing records it "
            f"with procure schedule {d['id']} --date YYYY-MM-DD"
        )
        echo(f"  arrived       {arrived} of {len(d['assets'])} units; {when}")
    if d["justification"]:
        echo(f"  justification {d['justification']}")
    echo("  lines")
    # The amount columns are as wide as their widest amount: a large order stays aligned.
    cur = d["currency"]
    unit_w = max([14, *(len(money_text(ln["unit_price"], cur)) for ln in d["lines"])])
    total_w = max([16, len(money_text(d["total"], cur))])
    for ln in d["lines"]:
        own = (
            ""
            if ln["ownership"] == "bought"
            else f"  [{ln['ownership']}, {ln['term_months']} months]"
        )
        echo(
            f"    {ln['line']}. {ln['quantity']:>5} × {ln['sku']:<16} {clip(ln['name'], 30):<30} {money_text(ln['unit_price'], cur):>{unit_w}} {money_text(ln['total'], cur):>{total_w}}{own}"
        )
    echo(f"    {'total':>{59 + unit_w}} {money_text(d['total'], cur):>{total_w}}")
    print_economics(d)
    echo("  stages")
    for s in d["stages"]:
        due = (
            f"  due {s['due_at'][:16].replace('T', ' ')} UTC"
            if s["due_at"] and s["status"] == "open"
            else ""
        )
        echo(
            f"    {s['stage']:<14} {s['status']:<10} {' + '.join(s['roles']) if s['mode'] == 'all' else ' | '.join(s['roles'])}{due}"
        )
        for dec in s["decisions"]:
            for_ = f" for {dec['on_behalf_of']}" if dec["on_behalf_of"] else ""
            comment = f": {dec['comment']}" if dec["comment"] else ""
            echo(
                f"      {dec['at'][:16].replace('T', ' ')}  {dec['outcome']:<9} {dec['by']}{for_} as {dec['role']} (round {dec['round']}){comment}"
            )
    for p in d["pending"]:
        parts = [", ".join(p["approvers"])] if p["approvers"] else []
        if p["delegates"]:
            parts.append(f"delegates: {', '.join(p['delegates'])}")
        for e in p["escalated"]:
            if e.get("nobody"):  # nor may its escalation role: it waits for the roles to change
                parts.append(f"{e['reason']}; what to do: {e['remedy']}")
            else:
                parts.append(f"escalated to {e['to']}: {e['reason']}")
        echo(f"  pending {p['stage']}: {'; '.join(parts) or 'nobody may decide it'}")
    if d["device_counts"]:
        # A rollout's hundreds of devices: counted by item and status; `asset list` lists them.
        echo(f"  devices ({len(d['assets'])}; procure asset list --request {d['id']} lists them)")
        for row in d["device_counts"]:
            note = (
                f", {row['unconfirmed']} not yet confirmed by their holder"
                if row["unconfirmed"]
                else ""
            )
            echo(f"    {row['count']:>5} × {row['sku']:<16} {row['status']}{note}")
    elif d["assets"]:
        echo("  devices")
        for a in d["assets"]:
            holder = f" → {a['assigned_to']}" if a["assigned_to"] else ""
            echo(
                f"    {a['serial'] or '(awaiting delivery)':<20} {a['sku']:<16} {a['status']}{holder}"
            )
    echo("  timeline")
    print_timeline(d["timeline"])


def print_timeline(events: list[dict[str, Any]]) -> None:
    """One line an event; the devices one move took together (a delivery's, a rollout's: the
    same action, moment and actor) on one line, counted, with the first and last serial."""
    for group in _together(events):
        e = group[0]
        move = f"{e['from']} → {e['to']}" if e["to"] and e["from"] != e["to"] else (e["to"] or "")
        details = e.get("details") or {}
        if not move and {"from", "to"} <= set(details):  # a start date moved, a supplier changed
            move = f"{details['from']} → {details['to']}"
        for_ = f" (for {e['on_behalf_of']})" if e["on_behalf_of"] else ""
        what = e["entity_id"]
        if len(group) > 1:
            what = f"{len(group)} devices {group[0]['entity_id']} … {group[-1]['entity_id']}"
        typer.echo(
            f"    {e['at'][:19].replace('T', ' ')}  {what:<28} {e['action']:<20} {move:<32} {e['actor']}{for_}"
        )


def _together(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive device events that differ only in the device, grouped."""
    groups: list[list[dict[str, Any]]] = []

    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        keys = ("at", "action", "from", "to", "actor", "on_behalf_of")
        return a["entity"] == b["entity"] == "asset" and all(a[k] == b[k] for k in keys)

    for e in events:
        if groups and same(groups[-1][-1], e):
            groups[-1].append(e)
        else:
            groups.append([e])
    return groups


def print_economics(d: dict[str, Any]) -> None:
    """Sourcing, buy/lease/DaaS, the delivery plan, the late-involvement ledger, the budget."""
    echo = typer.echo
    cur = d["currency"]
    echo("  sourcing")
    for s in d["sourcing"]:
        if s["mode"] == "framework":
            how = f"framework {s['agreement']}"
        elif s["mode"] == "offer":
            o = s["offer"]
            how = f"{o['kind']} offer, {money_text(o['monthly_rate'], cur)} a month for {o['term_months']} months"
        else:
            how = "individual order" + (f" ({s['justification']})" if s["justification"] else "")
        extra = ""
        if s["mode"] == "individual" and s["framework_price"] is not None:
            extra = f"; {s['framework_agreement']} would be {money_text(s['framework_price'], cur)}: this order costs {difference_text(s['difference'], cur)} in total"
        per = "a device over the term" if s["mode"] == "offer" else "a unit"
        echo(
            f"    {s['line']}. {s['sku']:<16} {how}: {money_text(s['unit_price'], cur)} {per} (list {money_text(s['list_price'], cur)}{extra})"
        )
        for q in s["quotes"]:
            echo(
                f"       quote {q['id']}: {q['supplier']} {money_text(q['unit_price'], cur)} a unit, {money_text(q['total'], cur)} in total"
            )
    for t in d["tco"]:
        term = t["options"][0]["term_months"]
        echo(f"  buy / lease / DaaS, line {t['line']} ({t['sku']}) over {term} months")
        for o in t["options"]:
            mark = "  ← cheapest" if o["cheapest"] else ""
            incl = f"  incl. {', '.join(o['includes'])}" if o["includes"] else ""
            # total = CAPEX + OPEX less what the bought devices are worth at the end of the
            # term: the residual value, positive as in --json, named as what the total subtracts
            residual = (
                f"  less residual value {money_text(o['residual'], cur):>16}"
                if Decimal(o["residual"])
                else " " * 38  # the column, empty: the rows stay aligned
            )
            echo(
                f"    {o['option']:<5} {clip(o['provider'], 22):<22} CAPEX {money_text(o['capex'], cur):>16}  OPEX {money_text(o['opex'], cur):>16}"
                f"{residual}  total {money_text(o['total'], cur):>16}  {money_text(o['monthly'], cur):>13}/month{incl}{mark}"
            )
        for other in t["other_terms"]:
            echo(
                f"    (not compared: {other['option']} from {other['provider']} over "
                f"{other['term_months']} months; the comparison runs over {term} months)"
            )
    dl = d["delivery"]
    when = (
        f"ordered {dl['ordered_on']}"
        if dl["ordered_on"]
        else (
            f"{dl['days_left']} days left"
            if dl["days_left"] >= 0
            else f"{-dl['days_left']} days late"
        )
    )
    missed = "  MISSED" if dl["missed"] else ""
    echo(
        f"  delivery plan: order by {dl['order_by']} ({when}): needed by {dl['needed_by']} "
        f"- {dl['lead_time_days']} days lead time - {dl['preparation_days']} days preparation{missed}"
    )
    lg = d["ledger"]
    state = "as ordered" if lg["frozen"] else "if ordered today"
    echo(
        f"  late-involvement cost ({state}): {money_text(lg['incurred'], cur)} incurred, {money_text(lg['avoided'], cur)} avoided"
    )
    for e in lg["entries"]:
        echo(
            f"    {e['label']:<52} {e['devices']:>5} × {money_text(e['per_device'], cur):>10} = {money_text(e['incurred'], cur):>14}"
            f"   ({e['devices_avoided']} avoided)"
        )
    if lg["peripherals"]:
        echo(
            "    not counted as devices (economics.peripheral_categories): "
            + ", ".join(
                f"{p['quantity']} × {p['sku']} ({p['category']})" for p in lg["peripherals"]
            )
        )
    b = d["budget"]
    if b["amount"] is None:
        echo(f"  budget {b['cost_centre']} {b['fiscal_year']}: none set")
    else:
        over = (
            f"  EXCEEDS the remainder ({b['policy']})"
            if b["exceeds"]
            else "  OVERSPENT"
            if b.get("overspent")
            else ""
        )
        echo(
            f"  budget {b['cost_centre']} {b['fiscal_year']}: {money_text(b['amount'], cur)}, committed {money_text(b['committed'], cur)}, "
            f"spent {money_text(b['spent'], cur)}, remaining {money_text(b['remaining'], cur)}{over}"
        )
    for chance in d["bundling"]:
        price = (
            f" reaching {money_text(chance['combined_price'], cur)} a unit (saves {money_text(chance['saving'], cur)})"
            if chance["combined_price"]
            else ", but no agreement has a price for them"
        )
        echo(
            f"  bundling: {chance['sku']} is also wanted by {listed(chance['with'])}: {chance['combined_quantity']} units together{price}"
        )
    terms = d["terms"]
    confirmed = ", ".join(
        f"{name} ({v.get('source') or v.get('by')})" for name, v in terms["confirmed"].items()
    )
    missing = f"; open: {', '.join(terms['missing'])}" if terms["missing"] else ""
    by = terms.get("confirm_by")  # request show says who may confirm them (not economics)
    if by and by["escalated"]:
        missing += (
            f" (to confirm by {by['role']} in place of purchasing, as {by['escalated']['reason']})"
        )
    elif by:
        missing += " (to confirm by purchasing)"
    echo(f"  contract terms: {confirmed or 'none confirmed yet'}{missing}")


def print_terms(data: dict[str, Any]) -> None:
    """`procure terms ID`: each term confirmed (by what or whom, when, with the note) or open,
    and who may confirm the open ones, with the command."""
    from models.economics import TERMS

    echo = typer.echo
    echo(f"{data['id']} ({data['status']}): contract terms")
    width = max(len(name) for name in TERMS)
    for name in TERMS:
        entry = data["checklist"].get(name)
        echo(f"  {name:<{width}}  {_confirmed(entry, data['timezone']) if entry else 'open'}")
    by = data["confirm_by"]
    if by is None:
        echo("  the checklist is complete" if not data["missing"] else "  the request is decided")
        return
    people = ", ".join(by["people"]) or "nobody holds the role now"
    instead = f" in place of purchasing, as {by['escalated']['reason']}" if by["escalated"] else ""
    echo(
        f"  to confirm by {by['role']}{instead} ({people}): procure terms {data['id']} "
        "--confirm TERM --as EMAIL, or --all for every open term"
    )


def _confirmed(entry: dict[str, Any], timezone: str) -> str:
    """'confirmed by FA-2026-NORDIC', or 'confirmed by paul@… (for …) on 25 Nov 2026 at 10:00
    CET: "note"'."""
    if entry.get("by") == "agreement":
        return f"confirmed by {entry.get('source') or 'its agreement'}"
    who = entry.get("by") or "—"
    if entry.get("on_behalf_of"):
        who += f" (for {entry['on_behalf_of']})"
    when = ""
    if entry.get("at"):
        when = f" on {moment_text(datetime.fromisoformat(entry['at']), timezone)}"
    note = f': "{entry["note"]}"' if entry.get("note") else ""
    return f"confirmed by {who}{when}{note}"


def print_report(data: dict[str, Any], currency: str = "EUR") -> None:
    """A report's tables as aligned text."""
    echo = typer.echo
    period = data["period"]
    echo(f"{data['title']} ({period['from'] or 'start'} to {period['to'] or 'today'})")
    money_keys = {"spend", "list", "paid", "saving", "incurred", "avoided"}
    for table, rows in data["tables"].items():
        echo(f"  {table.replace('_', ' ')}")
        if not rows:
            echo("    (nothing in this period)")
            continue
        columns = list(rows[0])
        cells = [
            [
                money_text(r[c], currency)
                if c in money_keys
                else ("—" if r[c] is None else str(r[c]))
                for c in columns
            ]
            for r in rows
        ]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        echo(
            "    "
            + "  ".join(c.replace("_", " ").ljust(w) for c, w in zip(columns, widths, strict=True))
        )
        for row in cells:
            echo(
                "    "
                + "  ".join(
                    v.rjust(w) if v[:1].isdigit() or v[:1] == "-" else v.ljust(w)
                    for v, w in zip(row, widths, strict=True)
                )
            )
    totals = ", ".join(
        f"{k.replace('_', ' ')} {money_text(v, currency) if k in money_keys else v}"
        for k, v in data["totals"].items()
    )
    echo(f"  totals: {totals}")
