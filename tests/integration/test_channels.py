"""Delivery channels against real servers on 127.0.0.1: an aiohttp webhook receiver and SMTP."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import logging
import socket
import ssl
import threading
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
import trustme
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

from streams.agents.notifier import build_channels
from streams.contracts.vocabulary import ChannelKind
from streams.notify.channels import (
    APPRISE_REFUSED,
    SMTP_AUTH_NEEDS_TLS,
    SMTP_TLS_REQUIRED,
    WEBHOOK_REFUSED,
    WEBHOOK_UNREACHABLE,
    AppriseChannel,
    Channel,
    ConsoleChannel,
    DeliveryError,
    EmailChannel,
    WebhookChannel,
    body_bytes,
    sign,
    verify_signature,
)
from streams.notify.messages import Message, render
from streams.notify.targets import TargetPolicy
from streams.settings import Settings
from tests.unit.test_notify_messages import missed, reminder, warning

pytestmark = pytest.mark.integration

SECRET = b"webhook-signing-secret"
SMTP_USER = "medstream"
SMTP_PASSWORD = "s3cret-password"
# The test receivers listen on loopback, which only an allow-list opens.
LOOPBACK = TargetPolicy.from_allow_list("127.0.0.1")
LOOPBACK_HTTP = TargetPolicy.from_allow_list("127.0.0.1", allow_http=True)


def a_message(notification_id: str = "ntf-test-1") -> Message:
    # A non-ASCII name checks that the signature covers the UTF-8 bytes actually sent.
    return render(
        reminder(medication_name="Lévothyroxine sodique"), "Europe/Paris", notification_id
    )


def assert_keeps_secret(error: DeliveryError, *secrets: str) -> None:
    """Neither the error nor the exception chain a logged traceback shows may reveal the target."""
    # The library exception (which names hosts and recipients) is not chained for display.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    shown = "".join(traceback.format_exception_only(error))
    for secret in secrets:
        assert secret not in str(error)
        assert secret not in repr(error)
        assert secret not in shown


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- Webhook receiver -----------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookServer:
    base_url: str
    received: list[Request] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@asynccontextmanager
async def serve_webhooks(
    ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[WebhookServer]:
    """A webhook receiver on an ephemeral port: /hook/ok, /hook/status/<code>, /hook/slow..."""
    server = WebhookServer(base_url="")
    release = asyncio.Event()

    async def record(request: web.Request) -> web.Request:
        server.received.append(Request(request.path, dict(request.headers), await request.read()))
        return request

    async def accept(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=204 if request.path.endswith("/nocontent") else 200)

    async def answer(request: web.Request) -> web.StreamResponse:
        await record(request)
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return web.Response(status=int(request.match_info["code"]), headers=headers)

    async def slow(request: web.Request) -> web.StreamResponse:
        await record(request)
        # Released at teardown so that the server can stop without waiting for it.
        with suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), timeout=10)
        return web.Response()

    async def redirect(request: web.Request) -> web.StreamResponse:
        await record(request)
        raise web.HTTPTemporaryRedirect("/hook/ok")

    app = web.Application()
    app.router.add_post("/hook/ok", accept)
    app.router.add_post("/hook/nocontent", accept)
    app.router.add_post("/hook/status/{code}", answer)
    app.router.add_post("/hook/slow", slow)
    app.router.add_post("/hook/redirect", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base_url = f"{'https' if ssl_context else 'http'}://{host}:{port}"
    try:
        yield server
    finally:
        release.set()
        await runner.cleanup()


@pytest.fixture
async def webhook_server() -> AsyncIterator[WebhookServer]:
    async with serve_webhooks() as server:
        yield server


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookChannel]:
    channel = WebhookChannel(SECRET, timeout=2.0, policy=LOOPBACK_HTTP)
    try:
        yield channel
    finally:
        await channel.close()


async def test_webhook_posts_the_signed_body(
    webhook: WebhookChannel, webhook_server: WebhookServer
) -> None:
    message = a_message()
    before = time.time()
    await webhook.deliver(webhook_server.url("/hook/ok"), message)

    [request] = webhook_server.received
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "ntf-test-1"
    assert request.headers["User-Agent"].startswith("medstream")
    timestamp = request.headers["X-Medstream-Timestamp"]
    assert int(before) <= int(timestamp) <= time.time()
    signature = request.headers["X-Medstream-Signature"]
    assert signature.startswith("v1=")
    assert verify_signature(SECRET, timestamp, request.body, signature, now=time.time())
    # Compact UTF-8 JSON, byte for byte what body_bytes gives, and the message's body.
    assert request.body == body_bytes(message)
    compact = json.dumps(message.body, separators=(",", ":"), ensure_ascii=False)
    assert request.body == compact.encode("utf-8")
    assert "Lévothyroxine".encode() in request.body
    assert json.loads(request.body) == message.body


async def test_a_receiver_with_the_wrong_secret_or_a_tampered_body_refuses(
    webhook: WebhookChannel, webhook_server: WebhookServer
) -> None:
    await webhook.deliver(webhook_server.url("/hook/ok"), a_message())
    [request] = webhook_server.received
    timestamp = request.headers["X-Medstream-Timestamp"]
    signature = request.headers["X-Medstream-Signature"]
    now = time.time()
    assert not verify_signature(b"another secret", timestamp, request.body, signature, now)
    tampered = request.body.replace(b"ntf-test-1", b"ntf-test-2")
    assert not verify_signature(SECRET, timestamp, tampered, signature, now)
    # The timestamp is signed too: moving it breaks the signature.
    assert not verify_signature(SECRET, str(int(timestamp) + 1), request.body, signature, now)


def test_verify_signature_rejects_stale_and_future_timestamps() -> None:
    body = b'{"a":1}'
    timestamp = "1700000000"
    signature = sign(SECRET, timestamp, body)
    assert verify_signature(SECRET, timestamp, body, signature, now=1700000000)
    assert verify_signature(SECRET, timestamp, body, signature, now=1700000300)
    assert not verify_signature(SECRET, timestamp, body, signature, now=1700000301)
    assert not verify_signature(SECRET, timestamp, body, signature, now=1699999699)
    assert verify_signature(SECRET, timestamp, body, signature, now=1700000500, tolerance=600)


# The last one is 1700000000 in Arabic-Indic digits, which str.isdigit accepts.
ARABIC_INDIC_TIMESTAMP = "\u0661\u0667" + "\u0660" * 8


@pytest.mark.parametrize("timestamp", ["", "abc", "-1700000000", "1.7e9", ARABIC_INDIC_TIMESTAMP])
def test_verify_signature_rejects_malformed_timestamps(timestamp: str) -> None:
    body = b"{}"
    assert not verify_signature(
        SECRET, timestamp, body, sign(SECRET, timestamp, body), now=1700000000
    )


def test_verify_signature_accepts_any_of_several_signatures() -> None:
    body, timestamp = b"{}", "1700000000"
    good = sign(SECRET, timestamp, body)
    old = sign(b"old secret", timestamp, body)
    assert verify_signature(SECRET, timestamp, body, f"{old}, {good}", now=1700000000)
    assert not verify_signature(SECRET, timestamp, body, f"{old}", now=1700000000)
    assert not verify_signature(SECRET, timestamp, body, "", now=1700000000)
    assert not verify_signature(SECRET, timestamp, body, good.removeprefix("v1="), 1700000000)


async def test_any_2xx_is_delivered(webhook: WebhookChannel, webhook_server: WebhookServer) -> None:
    await webhook.deliver(webhook_server.url("/hook/nocontent"), a_message())
    assert len(webhook_server.received) == 1


@pytest.mark.parametrize("code", [500, 502, 503, 408, 429])
async def test_server_errors_and_throttling_are_retryable(
    webhook: WebhookChannel, webhook_server: WebhookServer, code: int
) -> None:
    url = webhook_server.url(f"/hook/status/{code}")
    with pytest.raises(DeliveryError) as caught:
        await webhook.deliver(url, a_message())
    assert caught.value.retryable
    assert str(caught.value) == f"webhook answered HTTP {code}"
    assert_keeps_secret(caught.value, url, webhook_server.base_url, "/hook/")


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 422])
async def test_other_client_errors_are_final(
    webhook: WebhookChannel, webhook_server: WebhookServer, code: int
) -> None:
    url = webhook_server.url(f"/hook/status/{code}")
    with pytest.raises(DeliveryError) as caught:
        await webhook.deliver(url, a_message())
    assert not caught.value.retryable
    assert str(caught.value) == f"webhook answered HTTP {code}"
    assert_keeps_secret(caught.value, url, webhook_server.base_url)


async def test_retry_after_is_passed_on(
    webhook: WebhookChannel, webhook_server: WebhookServer
) -> None:
    with pytest.raises(DeliveryError) as caught:
        await webhook.deliver(webhook_server.url("/hook/status/503?retry_after=7"), a_message())
    assert caught.value.retry_after == 7.0


async def test_redirects_are_not_followed(
    webhook: WebhookChannel, webhook_server: WebhookServer
) -> None:
    with pytest.raises(DeliveryError) as caught:
        await webhook.deliver(webhook_server.url("/hook/redirect"), a_message())
    assert not caught.value.retryable
    assert [request.path for request in webhook_server.received] == ["/hook/redirect"]


async def test_a_slow_receiver_times_out(webhook_server: WebhookServer) -> None:
    channel = WebhookChannel(SECRET, timeout=0.3, policy=LOOPBACK_HTTP)
    url = webhook_server.url("/hook/slow")
    try:
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            await channel.deliver(url, a_message())
        assert time.monotonic() - started < 2.0
    finally:
        await channel.close()
    assert caught.value.retryable
    # The same text as a closed port: a timeout would tell a filtered port from a closed one.
    assert str(caught.value) == WEBHOOK_UNREACHABLE
    assert_keeps_secret(caught.value, url, webhook_server.base_url)


async def test_connection_refused_is_retryable(webhook: WebhookChannel) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook/secret-token"
    with pytest.raises(DeliveryError) as caught:
        await webhook.deliver(url, a_message())
    assert caught.value.retryable
    assert str(caught.value) == WEBHOOK_UNREACHABLE
    assert_keeps_secret(caught.value, url, "127.0.0.1", "secret-token")


@pytest.mark.parametrize(
    "url",
    ["ftp://files.example.org/secret-token", "not a url secret-token", "mailto:x@secret-token"],
)
async def test_a_target_that_is_no_http_url_is_final(webhook: WebhookChannel, url: str) -> None:
    with pytest.raises(DeliveryError) as caught:
        await webhook.deliver(url, a_message())
    assert not caught.value.retryable
    assert "secret-token" not in str(caught.value)


async def test_one_session_serves_many_deliveries_and_reopens_after_close(
    webhook: WebhookChannel, webhook_server: WebhookServer
) -> None:
    url = webhook_server.url("/hook/ok")
    await asyncio.gather(*(webhook.deliver(url, a_message(f"ntf-{i}")) for i in range(5)))
    session = webhook._session
    await webhook.deliver(url, a_message())
    assert webhook._session is session
    await webhook.close()
    await webhook.deliver(url, a_message())
    assert len(webhook_server.received) == 7
    keys = {request.headers["Idempotency-Key"] for request in webhook_server.received}
    assert keys == {"ntf-test-1", *(f"ntf-{i}" for i in range(5))}


# --- The webhook target policy, against a real receiver ------------------------------------


class FakeResolver(AbstractResolver):
    """Answers from a script, one list of addresses per lookup (the last one repeats)."""

    def __init__(self, *answers: list[str] | OSError) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, OSError):
            raise answer
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in answer
        ]

    async def close(self) -> None:
        """Nothing to release."""


def refused_without_trace(error: DeliveryError, url: str) -> None:
    assert str(error) == WEBHOOK_REFUSED
    assert not error.retryable
    assert_keeps_secret(error, url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook/ok",
        "http://localhost:{port}/hook/ok",
        "http://[::1]:{port}/hook/ok",
        "http://[::ffff:127.0.0.1]:{port}/hook/ok",
        "http://2130706433:{port}/hook/ok",
        # Fullwidth digits, which aiohttp connects to as 0.0.0.0 (this machine).
        "http://\uff10.\uff10.\uff10.\uff10:{port}/hook/ok",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
async def test_targets_inside_the_network_are_refused_and_get_no_request(
    webhook_server: WebhookServer, url: str
) -> None:
    # http is allowed here, so only the address decides.
    channel = WebhookChannel(SECRET, timeout=2.0, policy=TargetPolicy(allow_http=True))
    target = url.format(port=webhook_server.base_url.rsplit(":", 1)[1])
    try:
        with pytest.raises(DeliveryError) as caught:
            await channel.deliver(target, a_message())
    finally:
        await channel.close()
    refused_without_trace(caught.value, target)
    assert webhook_server.received == []


async def test_a_literal_inner_address_is_refused_before_any_connection() -> None:
    channel = WebhookChannel(SECRET, timeout=2.0)
    for url in ("https://169.254.169.254/latest/meta-data/", "https://10.0.0.1/"):
        with pytest.raises(DeliveryError) as caught:
            await channel.deliver(url, a_message())
        refused_without_trace(caught.value, url)
    # No HTTP session was even opened, so nothing was connected.
    assert channel._session is None


async def test_a_name_resolving_to_loopback_is_refused(webhook_server: WebhookServer) -> None:
    port = webhook_server.base_url.rsplit(":", 1)[1]
    resolver = FakeResolver(["127.0.0.1"])
    channel = WebhookChannel(
        SECRET, timeout=2.0, policy=TargetPolicy(allow_http=True), resolver=resolver
    )
    url = f"http://hooks.example.org:{port}/hook/ok"
    try:
        with pytest.raises(DeliveryError) as caught:
            await channel.deliver(url, a_message())
    finally:
        await channel.close()
    refused_without_trace(caught.value, url)
    assert resolver.lookups == ["hooks.example.org"]
    assert webhook_server.received == []


async def test_one_inner_address_among_public_ones_refuses_the_name(
    webhook_server: WebhookServer,
) -> None:
    port = webhook_server.base_url.rsplit(":", 1)[1]
    resolver = FakeResolver(["93.184.215.14", "127.0.0.1"])
    channel = WebhookChannel(
        SECRET, timeout=2.0, policy=TargetPolicy(allow_http=True), resolver=resolver
    )
    try:
        with pytest.raises(DeliveryError) as caught:
            await channel.deliver(f"http://hooks.example.org:{port}/hook/ok", a_message())
    finally:
        await channel.close()
    assert str(caught.value) == WEBHOOK_REFUSED
    assert webhook_server.received == []


async def test_dns_rebinding_cannot_reach_an_unvetted_address() -> None:
    # A public address cannot be served in a test, so 127.0.0.2 (allow-listed) stands for the
    # vetted answer and 127.0.0.1 (not allow-listed) for the inner one a rebinding DNS gives
    # next; both receivers listen on the same port, so only the address tells them apart.
    async with serve_webhooks(host="127.0.0.2") as vetted:
        port = int(vetted.base_url.rsplit(":", 1)[1])
        async with serve_webhooks(host="127.0.0.1", port=port) as inner:
            resolver = FakeResolver(["127.0.0.2"], ["127.0.0.1"])
            policy = TargetPolicy.from_allow_list("127.0.0.2", allow_http=True)
            channel = WebhookChannel(SECRET, timeout=2.0, policy=policy, resolver=resolver)
            url = f"http://rebind.test:{port}/hook/ok"
            try:
                await channel.deliver(url, a_message("ntf-first"))
                # A new session, so neither a pooled connection nor a cached answer is reused.
                await channel.close()
                with pytest.raises(DeliveryError) as caught:
                    await channel.deliver(url, a_message("ntf-second"))
            finally:
                await channel.close()
    assert resolver.lookups == ["rebind.test", "rebind.test"]
    [request] = vetted.received
    assert request.headers["Idempotency-Key"] == "ntf-first"
    # The Host header keeps the name; only the address connected to was pinned.
    assert request.headers["Host"] == f"rebind.test:{port}"
    assert str(caught.value) == WEBHOOK_REFUSED
    assert inner.received == []


async def test_https_keeps_the_host_name_for_the_certificate_check(
    certificate: Certificate,
) -> None:
    resolver = FakeResolver(["127.0.0.1"])
    channel = WebhookChannel(
        SECRET,
        timeout=2.0,
        ssl_context=certificate.client_context(),
        policy=TargetPolicy.from_allow_list("rebind.test"),
        resolver=resolver,
    )
    try:
        async with serve_webhooks(certificate.server_context()) as server:
            port = server.base_url.rsplit(":", 1)[1]
            # The certificate names rebind.test: it verifies against the name, not the address.
            await channel.deliver(f"https://rebind.test:{port}/hook/ok", a_message())
            [request] = server.received
    finally:
        await channel.close()
    assert request.headers["Host"] == f"rebind.test:{port}"


async def test_credentials_in_the_url_are_refused_and_never_sent(
    webhook: WebhookChannel, webhook_server: WebhookServer
) -> None:
    url = webhook_server.url("/hook/ok").replace("http://", "http://user:s3cret@")
    with pytest.raises(DeliveryError) as caught:
        await webhook.deliver(url, a_message())
    refused_without_trace(caught.value, url)
    assert_keeps_secret(caught.value, "s3cret")
    assert webhook_server.received == []


async def test_http_is_refused_unless_allowed(webhook_server: WebhookServer) -> None:
    channel = WebhookChannel(SECRET, timeout=2.0, policy=LOOPBACK)
    try:
        with pytest.raises(DeliveryError) as caught:
            await channel.deliver(webhook_server.url("/hook/ok"), a_message())
    finally:
        await channel.close()
    assert str(caught.value) == WEBHOOK_REFUSED
    assert webhook_server.received == []


async def test_unreachable_receivers_all_fail_with_one_text(
    webhook_server: WebhookServer,
) -> None:
    policy = TargetPolicy.from_allow_list("127.0.0.1, hooks.example.org", allow_http=True)
    closed_port = free_port()
    failures = []
    for resolver, url in [
        (None, f"http://127.0.0.1:{closed_port}/hook/ok"),
        (
            FakeResolver(socket.gaierror(socket.EAI_NONAME, "no such name")),
            "http://hooks.example.org/",
        ),
        (FakeResolver(OSError("resolver down")), "http://hooks.example.org/"),
    ]:
        channel = WebhookChannel(SECRET, timeout=2.0, policy=policy, resolver=resolver)
        try:
            with pytest.raises(DeliveryError) as caught:
                await channel.deliver(url, a_message())
        finally:
            await channel.close()
        failures.append(caught.value)
        assert_keeps_secret(caught.value, url, str(closed_port), "hooks.example.org")
    slow = WebhookChannel(SECRET, timeout=0.3, policy=policy)
    try:
        with pytest.raises(DeliveryError) as caught:
            await slow.deliver(webhook_server.url("/hook/slow"), a_message())
    finally:
        await slow.close()
    failures.append(caught.value)
    assert {(str(failure), failure.retryable) for failure in failures} == {
        (WEBHOOK_UNREACHABLE, True)
    }


async def test_the_settings_allow_list_opens_a_loopback_receiver(
    webhook_server: WebhookServer,
) -> None:
    base = Settings(notify_webhook_secret=SecretStr("secret"), notify_timeout_seconds=2.0)
    closed = build_channels(base)[ChannelKind.WEBHOOK.value]
    opened = build_channels(
        base.model_copy(
            update={"notify_webhook_allow": "127.0.0.0/8", "notify_webhook_allow_http": True}
        )
    )[ChannelKind.WEBHOOK.value]
    url = webhook_server.url("/hook/ok")
    try:
        with pytest.raises(DeliveryError) as caught:
            await closed.deliver(url, a_message())
        assert str(caught.value) == WEBHOOK_REFUSED
        assert webhook_server.received == []
        await opened.deliver(url, a_message())
    finally:
        await closed.close()
        await opened.close()
    assert len(webhook_server.received) == 1


def test_the_console_channel_exists_only_when_enabled() -> None:
    assert ChannelKind.CONSOLE.value not in build_channels(Settings())
    enabled = build_channels(Settings(notify_console_enabled=True))
    assert isinstance(enabled[ChannelKind.CONSOLE.value], ConsoleChannel)


def test_a_webhook_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        WebhookChannel(b"", timeout=1.0)


# --- SMTP -----------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler that keeps what it accepts and refuses some recipients."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        # Whether each accepted message came over TLS.
        self.tls: list[bool] = []
        self.release = threading.Event()

    # aiosmtpd finds its hooks by these upper-case names.
    async def handle_RCPT(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.startswith("nobody@"):
            return "550 no such user"
        if address.startswith("busy@"):
            return "450 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if any(rcpt.startswith("slow@") for rcpt in envelope.rcpt_tos):
            await asyncio.to_thread(self.release.wait, 10)
        content = envelope.content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        self.tls.append(session.ssl is not None)
        return "250 Message accepted"


@dataclass
class SmtpServer:
    mailbox: Mailbox
    port: int


def start_smtp(mailbox: Mailbox, **kwargs: Any) -> Controller:
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    mailbox = Mailbox()
    controller = start_smtp(mailbox)
    try:
        yield SmtpServer(mailbox, controller.port)
    finally:
        mailbox.release.set()
        controller.stop()


def email_channel(port: int, **kwargs: Any) -> EmailChannel:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "sender": "medstream@clinic.example",
        "timeout": 2.0,
    }
    return EmailChannel(**{**settings, **kwargs})


async def test_email_carries_subject_text_json_and_the_notification_id(
    smtp_server: SmtpServer,
) -> None:
    message = render(
        warning(medication_names=["Warfarine", "Aspirine"]), "Europe/Paris", "ntf-mail-1"
    )
    await email_channel(smtp_server.port).deliver("pat@example.org", message)

    [mail] = smtp_server.mailbox.messages
    assert smtp_server.mailbox.envelopes == [("medstream@clinic.example", ["pat@example.org"])]
    assert mail["Subject"] == message.subject
    assert mail["From"] == "medstream@clinic.example"
    assert mail["To"] == "pat@example.org"
    assert mail["X-Medstream-Notification-Id"] == "ntf-mail-1"
    assert mail["Message-ID"] == "<ntf-mail-1@clinic.example>"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Date"] is not None
    text_part = mail.get_body(preferencelist=("plain",))
    assert isinstance(text_part, EmailMessage)
    assert text_part.get_content().strip() == message.text
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_content_type() == "application/json"
    assert attachment.get_filename() == "notification.json"
    payload = attachment.get_content()
    assert isinstance(payload, bytes)
    assert json.loads(payload) == message.body


async def test_email_keeps_non_ascii_names(smtp_server: SmtpServer) -> None:
    message = a_message()
    await email_channel(smtp_server.port).deliver("pat@example.org", message)
    [mail] = smtp_server.mailbox.messages
    assert "Lévothyroxine" in str(mail["Subject"])
    body = mail.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage)
    assert "Lévothyroxine sodique" in body.get_content()


async def test_a_refused_recipient_is_final(smtp_server: SmtpServer) -> None:
    with pytest.raises(DeliveryError) as caught:
        await email_channel(smtp_server.port).deliver("nobody@example.org", a_message())
    assert not caught.value.retryable
    assert str(caught.value) == "SMTP server refused the recipient (550)"
    assert_keeps_secret(caught.value, "nobody@example.org", "nobody")
    assert smtp_server.mailbox.messages == []


async def test_a_deferred_recipient_is_retryable(smtp_server: SmtpServer) -> None:
    with pytest.raises(DeliveryError) as caught:
        await email_channel(smtp_server.port).deliver("busy@example.org", a_message())
    assert caught.value.retryable
    assert str(caught.value) == "SMTP server deferred the recipient (450)"
    assert_keeps_secret(caught.value, "busy@example.org")


async def test_a_slow_smtp_server_times_out(smtp_server: SmtpServer) -> None:
    channel = email_channel(smtp_server.port, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        await channel.deliver("slow@example.org", a_message())
    assert time.monotonic() - started < 2.0
    assert caught.value.retryable
    assert str(caught.value) == "SMTP timed out after 0.5s"
    assert_keeps_secret(caught.value, "slow@example.org")


async def test_no_smtp_server_is_retryable() -> None:
    with pytest.raises(DeliveryError) as caught:
        await email_channel(free_port()).deliver("pat@example.org", a_message())
    assert caught.value.retryable
    assert str(caught.value).startswith("SMTP connection failed")
    assert_keeps_secret(caught.value, "pat@example.org")


@pytest.mark.parametrize(
    "target",
    [
        "not-an-address",
        "pat@example.org\r\nBcc: x@evil.example",
        "a b@example.org",
        "@example.org",
        "pat@",
    ],
)
async def test_a_malformed_address_is_final(smtp_server: SmtpServer, target: str) -> None:
    with pytest.raises(DeliveryError) as caught:
        await email_channel(smtp_server.port).deliver(target, a_message())
    assert not caught.value.retryable
    assert_keeps_secret(caught.value, target, "example.org")
    assert smtp_server.mailbox.messages == []


async def test_a_display_name_is_dropped(smtp_server: SmtpServer) -> None:
    await email_channel(smtp_server.port).deliver("Pat Doe <pat@example.org>", a_message())
    [mail] = smtp_server.mailbox.messages
    assert mail["To"] == "pat@example.org"
    assert smtp_server.mailbox.envelopes[0][1] == ["pat@example.org"]


def test_email_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="not both"):
        email_channel(25, starttls=True, use_tls=True)
    with pytest.raises(ValueError, match="username and a password"):
        email_channel(25, username="medstream")


# --- SMTP with TLS and authentication (certificates from a test CA made with trustme) -------


@dataclass
class Certificate:
    authority: trustme.CA
    server: trustme.LeafCert

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.authority.configure_trust(context)
        return context


@pytest.fixture(scope="session")
def certificate() -> Certificate:
    authority = trustme.CA()
    return Certificate(authority, authority.issue_cert("127.0.0.1", "localhost", "rebind.test"))


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    valid = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    # handled=False: aiosmtpd then answers 535 itself (its default would send no reply at all).
    return AuthResult(success=valid, handled=False)


@pytest.fixture
def secure_smtp(certificate: Certificate) -> Iterator[SmtpServer]:
    mailbox = Mailbox()
    controller = start_smtp(
        mailbox,
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=authenticate,
    )
    try:
        yield SmtpServer(mailbox, controller.port)
    finally:
        controller.stop()


async def test_starttls_and_authentication(
    secure_smtp: SmtpServer, certificate: Certificate
) -> None:
    channel = email_channel(
        secure_smtp.port,
        starttls=True,
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        tls_context=certificate.client_context(),
    )
    await channel.deliver("pat@example.org", a_message("ntf-tls"))
    [mail] = secure_smtp.mailbox.messages
    assert mail["X-Medstream-Notification-Id"] == "ntf-tls"


async def test_a_wrong_password_is_final(secure_smtp: SmtpServer, certificate: Certificate) -> None:
    channel = email_channel(
        secure_smtp.port,
        starttls=True,
        username=SMTP_USER,
        password="wrong",
        tls_context=certificate.client_context(),
    )
    with pytest.raises(DeliveryError) as caught:
        await channel.deliver("pat@example.org", a_message())
    assert not caught.value.retryable
    assert str(caught.value) == "SMTP authentication failed (535)"
    assert_keeps_secret(caught.value, "pat@example.org", "wrong")


async def test_a_server_requiring_authentication_refuses_a_channel_without_credentials(
    secure_smtp: SmtpServer, certificate: Certificate
) -> None:
    channel = email_channel(secure_smtp.port, tls_context=certificate.client_context())
    with pytest.raises(DeliveryError) as caught:
        await channel.deliver("pat@example.org", a_message())
    assert not caught.value.retryable
    assert str(caught.value) == "SMTP server requires authentication or STARTTLS (530)"
    assert_keeps_secret(caught.value, "pat@example.org")
    assert secure_smtp.mailbox.messages == []


async def test_an_untrusted_certificate_is_final(secure_smtp: SmtpServer) -> None:
    # No tls_context: the system trust store does not know the self-signed certificate.
    channel = email_channel(
        secure_smtp.port, starttls=True, username=SMTP_USER, password=SMTP_PASSWORD
    )
    with pytest.raises(DeliveryError) as caught:
        await channel.deliver("pat@example.org", a_message())
    assert not caught.value.retryable
    assert str(caught.value) == "SMTP TLS certificate verification failed"
    assert_keeps_secret(caught.value, "pat@example.org", SMTP_PASSWORD)
    assert secure_smtp.mailbox.messages == []


@pytest.fixture
def starttls_smtp(certificate: Certificate) -> Iterator[SmtpServer]:
    """Offers STARTTLS and, over TLS only (aiosmtpd's default), AUTH."""
    mailbox = Mailbox()
    controller = start_smtp(
        mailbox, tls_context=certificate.server_context(), authenticator=authenticate
    )
    try:
        yield SmtpServer(mailbox, controller.port)
    finally:
        controller.stop()


async def test_starttls_is_used_whenever_the_server_offers_it(
    starttls_smtp: SmtpServer, certificate: Certificate
) -> None:
    channel = email_channel(starttls_smtp.port, tls_context=certificate.client_context())
    await channel.deliver("pat@example.org", a_message("ntf-opportunistic"))
    [mail] = starttls_smtp.mailbox.messages
    assert mail["X-Medstream-Notification-Id"] == "ntf-opportunistic"
    assert starttls_smtp.mailbox.tls == [True]


async def test_opportunistic_starttls_with_authentication(
    starttls_smtp: SmtpServer, certificate: Certificate
) -> None:
    channel = email_channel(
        starttls_smtp.port,
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        tls_context=certificate.client_context(),
    )
    await channel.deliver("pat@example.org", a_message())
    assert starttls_smtp.mailbox.tls == [True]


async def test_opportunistic_starttls_still_checks_the_certificate(
    starttls_smtp: SmtpServer,
) -> None:
    with pytest.raises(DeliveryError) as caught:
        await email_channel(starttls_smtp.port).deliver("pat@example.org", a_message())
    assert str(caught.value) == "SMTP TLS certificate verification failed"
    assert starttls_smtp.mailbox.messages == []


class AuthRecorder:
    """An authenticator that records every AUTH attempt and accepts it."""

    def __init__(self) -> None:
        self.attempts = 0

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.attempts += 1
        return AuthResult(success=True)


async def test_credentials_are_never_sent_without_tls() -> None:
    mailbox, recorder = Mailbox(), AuthRecorder()
    # A server without TLS that would take AUTH in clear text.
    controller = start_smtp(mailbox, authenticator=recorder, auth_require_tls=False)
    try:
        channel = email_channel(controller.port, username=SMTP_USER, password=SMTP_PASSWORD)
        with pytest.raises(DeliveryError) as caught:
            await channel.deliver("pat@example.org", a_message())
    finally:
        controller.stop()
    assert str(caught.value) == SMTP_AUTH_NEEDS_TLS
    assert not caught.value.retryable
    assert_keeps_secret(caught.value, SMTP_PASSWORD, "pat@example.org")
    assert recorder.attempts == 0
    assert mailbox.messages == []


async def test_required_tls_refuses_a_server_without_starttls(smtp_server: SmtpServer) -> None:
    channel = email_channel(smtp_server.port, require_tls=True)
    with pytest.raises(DeliveryError) as caught:
        await channel.deliver("pat@example.org", a_message())
    assert str(caught.value) == SMTP_TLS_REQUIRED
    assert not caught.value.retryable
    assert smtp_server.mailbox.messages == []
    # Without the requirement, a plain server without credentials still gets the e-mail.
    await email_channel(smtp_server.port).deliver("pat@example.org", a_message())
    assert smtp_server.mailbox.tls == [False]


async def test_required_tls_is_met_by_starttls(
    starttls_smtp: SmtpServer, certificate: Certificate
) -> None:
    channel = email_channel(
        starttls_smtp.port, require_tls=True, tls_context=certificate.client_context()
    )
    await channel.deliver("pat@example.org", a_message())
    assert starttls_smtp.mailbox.tls == [True]


async def test_implicit_tls(certificate: Certificate) -> None:
    mailbox = Mailbox()
    controller = start_smtp(mailbox, ssl_context=certificate.server_context())
    try:
        channel = email_channel(
            controller.port, use_tls=True, tls_context=certificate.client_context()
        )
        await channel.deliver("pat@example.org", a_message("ntf-implicit"))
    finally:
        controller.stop()
    [mail] = mailbox.messages
    assert mail["X-Medstream-Notification-Id"] == "ntf-implicit"


async def test_implicit_tls_with_an_untrusted_certificate_is_final(
    certificate: Certificate,
) -> None:
    mailbox = Mailbox()
    controller = start_smtp(mailbox, ssl_context=certificate.server_context())
    try:
        with pytest.raises(DeliveryError) as caught:
            await email_channel(controller.port, use_tls=True).deliver(
                "pat@example.org", a_message()
            )
    finally:
        controller.stop()
    assert not caught.value.retryable
    assert str(caught.value) == "SMTP TLS certificate verification failed"
    assert mailbox.messages == []


async def test_https_webhook_with_a_trusted_private_ca(certificate: Certificate) -> None:
    channel = WebhookChannel(
        SECRET, timeout=2.0, ssl_context=certificate.client_context(), policy=LOOPBACK
    )
    try:
        async with serve_webhooks(certificate.server_context()) as server:
            assert server.base_url.startswith("https://")
            await channel.deliver(server.url("/hook/ok"), a_message())
            [request] = server.received
    finally:
        await channel.close()
    assert verify_signature(
        SECRET,
        request.headers["X-Medstream-Timestamp"],
        request.body,
        request.headers["X-Medstream-Signature"],
        now=time.time(),
    )


async def test_https_webhook_with_an_untrusted_certificate_is_final(
    certificate: Certificate, webhook: WebhookChannel
) -> None:
    async with serve_webhooks(certificate.server_context()) as server:
        url = server.url("/hook/ok")
        with pytest.raises(DeliveryError) as caught:
            await webhook.deliver(url, a_message())
        assert server.received == []
    assert not caught.value.retryable
    assert str(caught.value) == "webhook TLS certificate verification failed"
    assert_keeps_secret(caught.value, url, server.base_url)


# --- Console --------------------------------------------------------------------------------


async def test_console_writes_one_line() -> None:
    stream = io.StringIO()
    message = render(missed(), "America/New_York", "ntf-c")
    await ConsoleChannel(stream).deliver("caregiver", message)
    output = stream.getvalue()
    assert output == f"[medstream → caregiver] {message.subject}: {message.text}\n"
    assert output.count("\n") == 1


async def test_console_defaults_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    await ConsoleChannel().deliver("patient", a_message())
    assert capsys.readouterr().out.startswith("[medstream → patient] Medication reminder:")


async def test_every_channel_is_a_channel() -> None:
    # Checked by mypy as much as at run time: each class satisfies the Channel protocol.
    pytest.importorskip("apprise")
    webhook, apprise = WebhookChannel(SECRET, timeout=1.0), AppriseChannel(timeout=1.0)
    channels: list[Channel] = [webhook, email_channel(25), ConsoleChannel(io.StringIO()), apprise]
    assert [channel.kind for channel in channels] == ["webhook", "email", "console", "apprise"]
    await webhook.close()
    await apprise.close()


# --- Apprise (its json:// service, posting to the local receiver) ---------------------------


@pytest.fixture
async def apprise_channel() -> AsyncIterator[AppriseChannel]:
    pytest.importorskip("apprise")
    channel = AppriseChannel(timeout=2.0, schemes=["json"], policy=LOOPBACK)
    try:
        yield channel
    finally:
        await channel.close()


def apprise_url(server: WebhookServer, path: str) -> str:
    return server.base_url.replace("http://", "json://") + path


async def test_apprise_delivers_title_and_body(
    apprise_channel: AppriseChannel, webhook_server: WebhookServer
) -> None:
    message = a_message()
    await apprise_channel.deliver(apprise_url(webhook_server, "/hook/ok"), message)
    [request] = webhook_server.received
    sent = json.loads(request.body)
    assert sent["title"] == message.subject
    assert sent["message"] == message.text


@pytest.fixture
def application_log() -> Iterator[io.StringIO]:
    """What the application's own log handlers (on the root logger) receive, from INFO up."""
    # caplog cannot serve here: pytest also attaches its handlers to non-propagating loggers.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_apprise_failure_is_retryable_and_keeps_the_url_out(
    apprise_channel: AppriseChannel,
    webhook_server: WebhookServer,
    application_log: io.StringIO,
) -> None:
    url = apprise_url(webhook_server, "/hook/status/500")
    with pytest.raises(DeliveryError) as caught:
        await apprise_channel.deliver(url, a_message())
    assert caught.value.retryable
    host_and_port = webhook_server.base_url.removeprefix("http://")
    assert_keeps_secret(caught.value, url, host_and_port)
    assert host_and_port.split(":")[1] not in application_log.getvalue()


async def test_apprise_refuses_what_is_not_an_apprise_url(
    apprise_channel: AppriseChannel, application_log: io.StringIO
) -> None:
    with pytest.raises(DeliveryError) as caught:
        await apprise_channel.deliver("nonsense://secret-token@nowhere", a_message())
    assert not caught.value.retryable
    assert_keeps_secret(caught.value, "secret-token", "nowhere")
    # Apprise itself logs the whole URL it could not parse; that must stay out of our logs.
    assert "secret-token" not in application_log.getvalue()


async def test_apprise_schemes_are_refused_unless_allowed(webhook_server: WebhookServer) -> None:
    pytest.importorskip("apprise")
    url = apprise_url(webhook_server, "/hook/ok")
    for channel in (
        AppriseChannel(timeout=2.0),  # no scheme allowed: the default
        AppriseChannel(timeout=2.0, schemes=["tgram"], policy=LOOPBACK),
    ):
        try:
            with pytest.raises(DeliveryError) as caught:
                await channel.deliver(url, a_message())
        finally:
            await channel.close()
        assert str(caught.value) == APPRISE_REFUSED
        assert not caught.value.retryable
        assert_keeps_secret(caught.value, url)
    assert webhook_server.received == []


@pytest.mark.parametrize(
    "url",
    [
        "json://127.0.0.1:{port}/hook/ok",
        "json://localhost:{port}/hook/ok",
        "json://[::1]:{port}/hook/ok",
        "json://169.254.169.254/latest/meta-data/",
    ],
)
async def test_apprise_hosts_inside_the_network_are_refused(
    webhook_server: WebhookServer, url: str
) -> None:
    pytest.importorskip("apprise")
    channel = AppriseChannel(timeout=2.0, schemes=["json"])
    target = url.format(port=webhook_server.base_url.rsplit(":", 1)[1])
    try:
        with pytest.raises(DeliveryError) as caught:
            await channel.deliver(target, a_message())
    finally:
        await channel.close()
    assert str(caught.value) == APPRISE_REFUSED
    assert_keeps_secret(caught.value, target)
    assert webhook_server.received == []


async def test_apprise_times_out(webhook_server: WebhookServer) -> None:
    pytest.importorskip("apprise")
    channel = AppriseChannel(timeout=0.5, schemes=["json"], policy=LOOPBACK)
    try:
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            await channel.deliver(apprise_url(webhook_server, "/hook/slow"), a_message())
        assert time.monotonic() - started < 3.0
    finally:
        await channel.close()
    assert caught.value.retryable
