"""A sample organisation, catalog and framework agreement (`procure init --sample`, the demo, tests)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlmodel import Session

HERE = Path(__file__).resolve().parent
ORG = HERE / "org.yaml"
CATALOG = HERE / "catalog.yaml"
AGREEMENTS = HERE / "agreements.yaml"


def load(
    session: Session, *, actor: str, at: datetime | None = None, agreements: bool = True
) -> dict[str, Any]:
    """Load the sample files into the database; returns what each load created or changed."""
    from models.catalog import load_catalog, read_catalog_file
    from models.org import load_org, read_org_file

    org, org_doc = read_org_file(ORG)
    catalog, catalog_doc = read_catalog_file(CATALOG)
    report = {
        "org": load_org(session, org=org, doc=org_doc, actor=actor, at=at),
        "catalog": load_catalog(session, catalog=catalog, doc=catalog_doc, actor=actor, at=at),
    }
    if agreements:
        contract, contract_doc = read_catalog_file(AGREEMENTS)
        report["agreements"] = load_catalog(
            session, catalog=contract, doc=contract_doc, actor=actor, at=at
        )
    return report
