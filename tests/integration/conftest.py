"""Fixtures of the integration tests that need more than the broker: a real webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Receiver:
    """A webhook receiver: records every request; a path can be told to fail N times first."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    failures_left: dict[str, int] = field(default_factory=dict)
    arrivals: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # {"a": "b"}: requests to path a are answered only once one to path b has arrived (or
    # after a minute), so a test can tell b was sent while a was still being tried.
    waits_for: dict[str, str] = field(default_factory=dict)
    arrived: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))

    def for_path(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    @property
    def traceparents(self) -> list[str | None]:
        return [r["traceparent"] for r in self.requests]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        path = request.match_info["path"]
        state.arrivals[path].append(time.time())
        state.arrived[path].set()
        if path in state.waits_for:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.arrived[state.waits_for[path]].wait(), 60)
        left = state.failures_left.get(path, 0)
        if left != 0:
            state.failures_left[path] = left - 1
            return web.Response(status=500, text="try again")
        state.requests.append(
            {
                "path": path,
                "body": json.loads(body),
                "raw": body,
                "timestamp": request.headers["X-Medstream-Timestamp"],
                "signature": request.headers["X-Medstream-Signature"],
                "idempotency_key": request.headers["Idempotency-Key"],
                "traceparent": request.headers.get("traceparent"),
            }
        )
        return web.Response(status=200)

    application = web.Application()
    application.router.add_post("/hooks/{path}", hook)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/hooks"
    try:
        yield state
    finally:
        await runner.cleanup()
