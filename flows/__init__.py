"""Prefect flows: orchestration only (the loop, the parallel baseline, the report)."""
