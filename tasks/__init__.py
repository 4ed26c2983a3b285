"""Prefect tasks: thin wrappers around ``alcore`` adding persistence, logs and artifacts."""
