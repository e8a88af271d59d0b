"""procure: flows."""
