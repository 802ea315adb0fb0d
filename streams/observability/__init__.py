"""Observability: Prometheus metrics, the worker's health/readiness/metrics pages and JSON logs."""
