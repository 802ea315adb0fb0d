"""The worker's HTTP pages: /health (liveness), /ready (readiness) and /metrics (Prometheus)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import faust
from faust.web import Request, Response, View

from streams.agents.runtime import tables_recovered
from streams.observability.metrics import CONTENT_TYPE_LATEST, Metrics, collect_from_app

Readiness = Callable[[], tuple[bool, str]]


def default_readiness(app: faust.App) -> Readiness:
    """Ready once the consumer has partitions, no rebalance is under way and tables recovered."""

    def readiness() -> tuple[bool, str]:
        try:
            assignment = app.consumer.assignment()
        except Exception:  # the consumer has not started yet
            return False, "the Kafka consumer is not started"
        if not assignment:
            return False, "no partitions are assigned"
        if not tables_recovered(app):
            return False, "a rebalance or table recovery is in progress"
        return True, "partitions assigned and tables recovered"

    return readiness


def install_web(
    app: faust.App,
    metrics: Metrics,
    readiness: Readiness,
    tables: Mapping[str, Any],
) -> None:
    """Register the three pages on the app's web server (call before the app starts)."""

    @app.page("/health", name="medstream-health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "alive"})

    @app.page("/ready", name="medstream-ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ready, reason = readiness()
            return self.json(
                {"status": "ready" if ready else "not ready", "reason": reason},
                status=200 if ready else 503,
            )

    @app.page("/metrics", name="medstream-metrics")
    class PrometheusMetrics(View):
        async def get(self, request: Request) -> Response:
            collect_from_app(metrics, app, tables)
            return self.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
