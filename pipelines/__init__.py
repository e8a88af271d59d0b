"""Pipeline files that ship with procure (default.yaml); an organisation edits a copy."""
