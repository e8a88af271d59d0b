"""procure: tasks."""
