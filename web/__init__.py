"""The approval web app and the HTTP API (FastAPI)."""
