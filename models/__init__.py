"""The procure domain: tables, the lifecycle, the pipeline and the rules (plain Python, no Prefect)."""
