"""procure: notifications."""
