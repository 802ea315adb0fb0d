"""The worker's admin endpoints (pause, resume, replay), behind a bearer token and audited."""

from __future__ import annotations

import argparse
import hmac
import logging
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import faust
from aiohttp import web as aiohttp_web
from faust.web import Request, Response, View
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.ops.commands import audit_replay, check_replay, replay, replay_arguments
from streams.ops.control import send_pause_commands
from streams.settings import Settings
from streams.topics import AUDIT_LOG, CONTROL, ensure_topics
from streams.topology import pause_targets

log = logging.getLogger(__name__)

ACTOR_HEADER = "X-Medstream-Actor"
# A pause or replay request is a few hundred bytes; anything near this is not one.
ADMIN_BODY_MAX_BYTES = 64 * 1024

Name = Annotated[str, Field(min_length=1, max_length=249)]
Offset = Annotated[int, Field(ge=0)]


class _Body(BaseModel):
    """Strict JSON: no coercion ("5" is no number, "false" no boolean), no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class PauseRequest(_Body):
    """The body of POST /admin/pause and /admin/resume: topics and agents, each a name or a list."""

    topics: Name | Annotated[list[Name], Field(max_length=100)] = []
    agents: Name | Annotated[list[Name], Field(max_length=100)] = []

    def names(self, field: str) -> list[str]:
        value = getattr(self, field)
        return [value] if isinstance(value, str) else list(value)


class ReplayRequest(_Body):
    """The body of POST /admin/replay: the options of `medstream replay`, typed."""

    topic: Name | None = None
    dead_letters: bool = False
    reason: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    since: datetime | None = None
    until: datetime | None = None
    from_offset: Offset | None = None
    to_offset: Offset | None = None
    partition: Offset | None = None
    dry_run: bool = False

    @field_validator("since", "until")
    @classmethod
    def _utc_unless_said(cls, value: datetime | None) -> datetime | None:
        # As on the command line: a time without an offset is UTC.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def arguments(self) -> argparse.Namespace:
        return replay_arguments(**self.model_dump())


_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def describe_errors(error: ValidationError) -> str:
    """What is wrong with a body, naming fields and rules but never quoting a value."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        # Unknown keys are the caller's text too: named only when they look like a field.
        parts = [
            str(part) if isinstance(part, int) or _FIELD_NAME.fullmatch(str(part)) else "?"
            for part in item["loc"]
        ]
        # Union branches repeat the field with the type tried ("topics.str"): keep the field.
        where = ".".join(part for part in parts if part not in ("str", "list[str]")) or "body"
        if item["type"] == "json_invalid":
            problems.append("the body is not valid JSON")
        elif item["type"] == "model_type":
            problems.append("the body is not a JSON object")
        elif item["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown field")
        else:
            problems.append(f"{where}: {item['msg']}")
    return "; ".join(dict.fromkeys(problems))


class BadRequestError(ValueError):
    """A body the endpoint refuses with 400; the message names no value of it."""

    status = 400


class BodyTooLargeError(BadRequestError):
    """A body over :data:`ADMIN_BODY_MAX_BYTES`: 413, as aiohttp itself would answer."""

    status = 413


async def read_body(request: Request, model: type[_Body]) -> Any:
    """The request's body validated against ``model``; :class:`BadRequestError` otherwise."""
    try:
        # aiohttp's request under Faust's; it enforces client_max_size (the app factory sets it).
        raw = await request.read()
    except aiohttp_web.HTTPRequestEntityTooLarge:
        raise BodyTooLargeError(f"the body is larger than {ADMIN_BODY_MAX_BYTES} bytes") from None
    if len(raw) > ADMIN_BODY_MAX_BYTES:
        raise BodyTooLargeError(f"the body is larger than {ADMIN_BODY_MAX_BYTES} bytes")
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as error:
        raise BadRequestError(describe_errors(error)) from None


def bearer_matches(header: str, token: bytes) -> bool:
    """Whether an Authorization header carries exactly ``token`` (compared in constant time)."""
    scheme, _, credential = header.partition(" ")
    offered = credential.strip().encode("utf-8", "replace")
    # compare_digest runs in time independent of where the bytes differ; an empty token never
    # gets here (Settings refuses short ones), and an empty credential never matches.
    return scheme.lower() == "bearer" and bool(offered) and hmac.compare_digest(offered, token)


def install_admin(app: faust.App, settings: Settings) -> None:
    """Register POST /admin/pause, /admin/resume and /admin/replay; off without a token."""
    if settings.admin_token is None:
        return
    token = settings.admin_token.get_secret_value().encode("utf-8")

    def refused(view: View) -> Response:
        return view.json(
            {"error": "a valid bearer token is needed"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    def authorised(request: Request) -> bool:
        return bearer_matches(str(request.headers.get("Authorization", "")), token)

    def actor(request: Request) -> str:
        # Who holds the token is unknown; the caller may name the person acting.
        return str(request.headers.get(ACTOR_HEADER) or "admin-http")[:200]

    async def pause_or_resume(view: View, request: Request, paused: bool) -> Response:
        if not authorised(request):
            return refused(view)
        try:
            given: PauseRequest = await read_body(request, PauseRequest)
            targets = pause_targets(given.names("topics"), given.names("agents"))
        except ValueError as error:
            return view.json({"error": str(error)}, status=getattr(error, "status", 400))
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
                return refused(self)
            try:
                given: ReplayRequest = await read_body(request, ReplayRequest)
            except BadRequestError as error:
                return self.json({"error": str(error)}, status=error.status)
            args = given.arguments()
            problem = check_replay(args)
            if problem:
                return self.json({"error": problem}, status=400)
            try:
                sent = await replay(args, settings)
            except (LookupError, ValueError) as error:
                await _audit(args, actor(request), f"failed: {error}")
                return self.json({"error": str(error)}, status=400)
            await _audit(args, actor(request), "ok")
            return self.json({"dry_run": args.dry_run, "records": dict(sent)})

    async def _audit(args: argparse.Namespace, who: str, outcome: str) -> None:
        if not args.dry_run:
            await audit_replay(settings, args, who, outcome)
