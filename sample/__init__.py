"""A sample organisation and catalog (`procure init --sample`, the demo, the tests)."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
ORG = HERE / "org.yaml"
CATALOG = HERE / "catalog.yaml"
AGREEMENTS = HERE / "agreements.yaml"
