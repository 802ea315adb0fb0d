"""The worker's HTTP pages: /health (liveness), /ready (readiness) and /metrics (Prometheus)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import faust
from faust.web import Request, Response, View

from streams.faust_transport import tables_recovered
from streams.observability.liveness import Liveness, positions_of
from streams.observability.metrics import CONTENT_TYPE_LATEST, Metrics, collect_from_app
from streams.topology import SAMPLE_PARTITION_PROGRESS

Readiness = Callable[[], tuple[bool, str]]


class StateReadiness(Protocol):
    """Whether the tables of the current assignment are restored (streams.state.Restorer)."""

    def is_ready(self) -> bool: ...


def default_readiness(
    app: faust.App, state: StateReadiness | None = None, liveness: Liveness | None = None
) -> Readiness:
    """Ready once the consumer has partitions, no rebalance is under way and every assigned
    partition's tables are restored, while no agent is down after a crash and no partition is
    stalled."""

    def readiness() -> tuple[bool, str]:
        problem = liveness.problem() if liveness is not None else None
        if problem is not None:
            return False, problem
        try:
            assignment = app.consumer.assignment()
        except Exception:  # the consumer has not started yet
            return False, "the Kafka consumer is not started"
        if not assignment:
            return False, "no partitions are assigned"
        if not tables_recovered(app) or (state is not None and not state.is_ready()):
            return False, "a rebalance or table recovery is in progress"
        return True, "partitions assigned and tables recovered"

    return readiness


def install_liveness(app: faust.App, liveness: Liveness) -> None:
    """Sample the assigned partitions' positions on every worker, so stalls are seen between
    requests too (a stall is "no progress for N seconds", which sparse requests cannot tell)."""
    interval = max(0.2, min(5.0, liveness.stall_seconds / 10))

    @app.timer(  # type: ignore[untyped-decorator]
        interval=interval, on_leader=False, name=SAMPLE_PARTITION_PROGRESS.name
    )
    async def sample_partition_progress() -> None:
        liveness.observe(positions_of(app))


def install_web(
    app: faust.App,
    metrics: Metrics,
    readiness: Readiness,
    tables: Mapping[str, Any],
    liveness: Liveness | None = None,
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
            collect_from_app(metrics, app, tables, liveness)
            metrics.set_ready(readiness()[0])
            return self.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
