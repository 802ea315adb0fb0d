"""The worker's admin endpoints (pause, resume, replay), behind a bearer token and audited."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

import faust
from faust.web import Request, Response, View

from streams.ops.commands import audit_replay, check_replay, replay, replay_arguments
from streams.ops.control import agent_topics, pause_targets, send_pause_commands
from streams.settings import Settings
from streams.topics import AUDIT_LOG, CONTROL, ensure_topics

log = logging.getLogger(__name__)

ACTOR_HEADER = "X-Medstream-Actor"


def install_admin(app: faust.App, settings: Settings) -> None:
    """Register POST /admin/pause, /admin/resume and /admin/replay; off without a token."""
    if settings.admin_token is None:
        return
    token = settings.admin_token.get_secret_value().encode("utf-8")

    def authorised(request: Request) -> bool:
        offered = request.headers.get("Authorization", "")
        scheme, _, credential = offered.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode("utf-8"), token
        )

    def actor(request: Request) -> str:
        # Who holds the token is unknown; the caller may name the person acting.
        return str(request.headers.get(ACTOR_HEADER) or "admin-http")[:200]

    async def body(request: Request) -> dict[str, Any]:
        try:
            parsed = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise ValueError("the body is not JSON") from None
        if not isinstance(parsed, dict):
            raise ValueError("the body is not a JSON object")
        return parsed

    async def pause_or_resume(view: View, request: Request, paused: bool) -> Response:
        if not authorised(request):
            return view.json({"error": "a valid bearer token is needed"}, status=401)
        try:
            given = await body(request)
            targets = pause_targets(
                agent_topics(app, settings),
                _names(given, "topics"),
                _names(given, "agents"),
            )
        except ValueError as error:
            return view.json({"error": str(error)}, status=400)
        if not targets:
            return view.json({"error": "name at least one of topics or agents"}, status=400)
        await ensure_topics(settings, (CONTROL, AUDIT_LOG))
        await send_pause_commands(settings, targets, paused=paused, actor=actor(request))
        return view.json({"paused" if paused else "resumed": targets})

    @app.page("/admin/pause", name="medstream-admin-pause")
    class Pause(View):
        async def post(self, request: Request) -> Response:
            return await pause_or_resume(self, request, paused=True)

    @app.page("/admin/resume", name="medstream-admin-resume")
    class Resume(View):
        async def post(self, request: Request) -> Response:
            return await pause_or_resume(self, request, paused=False)

    @app.page("/admin/replay", name="medstream-admin-replay")
    class Replay(View):
        async def post(self, request: Request) -> Response:
            if not authorised(request):
                return self.json({"error": "a valid bearer token is needed"}, status=401)
            try:
                args = replay_arguments(**await body(request))
            except (ValueError, TypeError) as error:
                return self.json({"error": str(error)}, status=400)
            problem = check_replay(args)
            if problem:
                return self.json({"error": problem}, status=400)
            try:
                sent = await replay(args, settings)
            except (LookupError, ValueError) as error:
                await _audit(args, actor(request), f"failed: {error}")
                return self.json({"error": str(error)}, status=400)
            if not args.dry_run:
                await _audit(args, actor(request), "ok")
            return self.json({"dry_run": args.dry_run, "records": dict(sent)})

    async def _audit(args: Any, who: str, outcome: str) -> None:
        if not args.dry_run:
            await audit_replay(settings, args, who, outcome)


def _names(given: dict[str, Any], field: str) -> list[str]:
    value = given.get(field, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{field} must be a list of names, got {json.dumps(value)[:80]}")
    return value
