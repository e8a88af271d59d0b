"""procure: migrations/versions."""
