"""Delivery channels: signed webhooks, e-mail over SMTP, the console, and Apprise URLs.

Every failure is a `DeliveryError` whose message names what went wrong but never the target
(URL, address, token): errors end up in logs and in NotificationOutcome events. Exceptions are
re-raised `from None` so that a logged traceback does not carry the library's own message,
which often does name the host or the recipient.

Webhook signatures (scheme v1)
------------------------------
A webhook is an HTTP POST of the notification's JSON body (compact, UTF-8) with the headers

    Content-Type: application/json
    X-Medstream-Timestamp: <unix time in whole seconds>
    X-Medstream-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body bytes)>
    Idempotency-Key: <notification id; the same on every retry of one notification>

A receiver recomputes the HMAC over the raw request body exactly as received (before any JSON
parsing), compares in constant time, and refuses timestamps more than a few minutes from its
own clock so that a captured request cannot be replayed later; `verify_signature` does all of
that. The signature header may list several comma-separated `v1=` values (a sender rotating its
secret); one match suffices. Receivers should de-duplicate on Idempotency-Key: delivery is
retried after timeouts, so a request may arrive more than once.

A 2xx answer means delivered. 408, 429 and 5xx answers, timeouts and connection failures are
worth retrying; any other answer is final (redirects are not followed).

Targets are patient-supplied, so a webhook may only reach what `streams.notify.targets` allows:
https (http when the settings say so), no credentials, and a host whose every address is public
or allow-listed. The check runs in the connector's resolver, on the very addresses the
connection then uses, so a name that answers differently a moment later (DNS rebinding) cannot
slip an inner address through. A refused target, and every failure to reach a receiver, has one
fixed text each: which hosts and ports answer inside the network is not to be learnt from
NotificationOutcome errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr, parsedate_to_datetime
from typing import Protocol, TextIO

import aiohttp
import aiosmtplib
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from streams.notify.messages import Message
from streams.notify.targets import (
    Refusal,
    TargetPolicy,
    address_refusal,
    literal_address,
    url_refusal,
)
from streams.observability import tracing

SIGNATURE_SCHEME = "v1"
TIMESTAMP_HEADER = "X-Medstream-Timestamp"
SIGNATURE_HEADER = "X-Medstream-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
NOTIFICATION_ID_HEADER = "X-Medstream-Notification-Id"
USER_AGENT = "medstream-notifier/1"

WEBHOOK_REFUSED = "target refused by the webhook policy"
WEBHOOK_UNREACHABLE = "webhook receiver not reachable"
APPRISE_REFUSED = "target refused by the apprise policy"

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A delivery attempt failed; the message never contains the target."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        # Seconds the receiver asked us to wait (HTTP Retry-After), when it said so.
        self.retry_after = retry_after


class Channel(Protocol):
    """One way of delivering a message to a target (a URL, an address, a label)."""

    kind: str

    async def deliver(self, target: str, message: Message) -> None:
        """Deliver once, or raise DeliveryError."""
        ...

    async def close(self) -> None:
        """Release connections (the worker is stopping)."""
        ...


def body_bytes(message: Message) -> bytes:
    """The bytes a webhook sends (and signs): compact JSON, UTF-8."""
    return json.dumps(
        message.body, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Medstream-Signature value for a body sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_SCHEME}={digest}"


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float,
    tolerance: float = 300,
) -> bool:
    """True when `signature` signs `body` at `timestamp` and the timestamp is fresh.

    `timestamp` and `signature` are the X-Medstream-Timestamp and X-Medstream-Signature header
    values, `body` the raw request body, `now` the receiver's unix time, `tolerance` how many
    seconds the timestamp may be off in either direction.
    """
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode()
    matched = False
    for candidate in signature.split(","):
        # Every candidate is compared, so the time taken does not reveal which one matched.
        matched |= hmac.compare_digest(candidate.strip().encode(), expected)
    return matched


class TargetRefusedError(OSError):
    """The resolver refused every connection to a host (raised inside aiohttp's connector)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(WEBHOOK_REFUSED)
        self.refusal = refusal


class VettingResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, and refuses a host unless every address is
    allowed by the policy: the connector connects only to the addresses returned here.

    aiohttp keeps the URL's host name for the Host header and for TLS (SNI and the certificate
    check), so only the address a connection goes to is decided here.
    """

    def __init__(self, policy: TargetPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        # Created on first use: aiohttp's default resolver binds to the running loop.
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of `host`, all of them vetted; TargetRefusedError otherwise."""
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        refusal = address_refusal(host, [result["host"] for result in results], self._policy)
        if refusal is not None:
            raise TargetRefusedError(refusal)
        return results

    async def close(self) -> None:
        """Close the resolver underneath."""
        if self._inner is not None:
            await self._inner.close()


class WebhookChannel:
    """Signed JSON POSTs; one HTTP session per channel, opened on first use."""

    kind = "webhook"

    def __init__(
        self,
        secret: bytes,
        timeout: float,
        *,
        max_connections: int = 100,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        policy: TargetPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        if not secret:
            raise ValueError("a webhook secret is required")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._secret = secret
        self.timeout = timeout
        self._max_connections = max_connections
        # E.g. one trusting a hospital's private CA; None means the system's trust store.
        self._ssl_context = ssl_context
        self._clock = clock
        # The default: https only, public addresses only.
        self.policy = policy if policy is not None else TargetPolicy()
        # The resolver beneath the vetting one (tests give one that lies, like a rebinding DNS).
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession binds to the running loop, which the constructor
        # (called while wiring the app) may not have.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    ssl=self._ssl_context if self._ssl_context is not None else True,
                    # Its DNS cache holds only what this resolver returned, so vetted addresses.
                    resolver=VettingResolver(self.policy, self._resolver),
                ),
                headers={"User-Agent": USER_AGENT},
                # Proxy variables would send the request somewhere the policy never checked.
                trust_env=False,
            )
        return self._session

    async def deliver(self, target: str, message: Message) -> None:
        """POST the signed body to the URL `target`."""
        # aiohttp skips the resolver for a literal address, so the URL check covers those.
        refusal = url_refusal(target, self.policy)
        if refusal is not None:
            log.debug("webhook target refused: %s", refusal.value)
            raise DeliveryError(WEBHOOK_REFUSED, retryable=False)
        payload = body_bytes(message)
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, payload),
            IDEMPOTENCY_HEADER: message.notification_id,
        }
        # W3C traceparent, so that a receiver can continue the trace of this delivery.
        tracing.inject_http_headers(headers)
        session = self._open_session()
        try:
            async with session.post(
                target, data=payload, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"), self._clock())
        except aiohttp.InvalidURL:
            raise DeliveryError("webhook target is not a valid URL", retryable=False) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, TargetRefusedError):
                log.debug("webhook target refused: %s", exc.os_error.refusal.value)
                raise DeliveryError(WEBHOOK_REFUSED, retryable=False) from None
            if isinstance(exc, aiohttp.ClientConnectorCertificateError):
                # Not fixed within a retry schedule; an operator must look at it. Only an
                # allowed host gets this far, so it tells nothing about the inner network.
                raise DeliveryError(
                    "webhook TLS certificate verification failed", retryable=False
                ) from None
            raise _unreachable(exc) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Refused, timed out, reset, no such name: one text, or errors would map the network.
            raise _unreachable(exc) from None
        if 200 <= status < 300:
            return
        retryable = status in (408, 429) or status >= 500
        raise DeliveryError(
            f"webhook answered HTTP {status}",
            retryable=retryable,
            retry_after=retry_after if retryable else None,
        )

    async def close(self) -> None:
        """Close the HTTP session (a later delivery opens a new one)."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _unreachable(exc: BaseException) -> DeliveryError:
    # The exception type helps an operator; the target stays out of the log.
    log.debug("webhook attempt failed: %s", type(exc).__name__)
    return DeliveryError(WEBHOOK_UNREACHABLE, retryable=True)


def _retry_after(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


SMTP_TLS_REQUIRED = "SMTP server offers no TLS, which the settings require"
SMTP_AUTH_NEEDS_TLS = "SMTP credentials are not sent without TLS"


class EmailChannel:
    """A text/plain e-mail with the JSON body attached, over SMTP (one connection per e-mail).

    TLS: implicit (`use_tls`), STARTTLS required (`starttls`), or else STARTTLS whenever the
    server offers it, always with the certificate checked. Credentials only ever go over TLS:
    on a plain connection a delivery with credentials fails before AUTH, and so does every
    delivery with `require_tls`.
    """

    kind = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        timeout: float,
        starttls: bool = False,
        use_tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        *,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        require_tls: bool = False,
    ) -> None:
        if starttls and use_tls:
            raise ValueError("choose STARTTLS or implicit TLS, not both")
        if (username is None) != (password is None):
            raise ValueError("SMTP authentication needs both a username and a password")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout
        self.starttls = starttls
        self.use_tls = use_tls
        self.require_tls = require_tls
        self._username = username
        self._password = password
        # E.g. one trusting a private CA; None means the system's trust store.
        self._tls_context = tls_context
        # The name given in EHLO; None means this host's FQDN, looked up once.
        self._local_hostname = local_hostname

    def compose(self, target: str, message: Message) -> EmailMessage:
        """The e-mail for one message (exposed for tests and previews)."""
        mail = EmailMessage()
        mail["Subject"] = " ".join(message.subject.split())
        mail["From"] = self.sender
        mail["To"] = target
        mail["Date"] = format_datetime(datetime.now(UTC))
        domain = self.sender.rpartition("@")[2] or "medstream.invalid"
        # The same Message-ID on every retry lets mail systems drop a duplicate.
        mail["Message-ID"] = f"<{message.notification_id}@{domain}>"
        mail[NOTIFICATION_ID_HEADER] = message.notification_id
        # RFC 3834: keeps vacation responders from answering a notification.
        mail["Auto-Submitted"] = "auto-generated"
        mail.set_content(message.text)
        mail.add_attachment(
            body_bytes(message),
            maintype="application",
            subtype="json",
            filename="notification.json",
        )
        return mail

    async def deliver(self, target: str, message: Message) -> None:
        """Send the e-mail to the address `target`."""
        address = _plain_address(target)
        if address is None:
            raise DeliveryError("e-mail target is not a valid address", retryable=False)
        try:
            mail = self.compose(address, message)
        except ValueError:
            raise DeliveryError("e-mail target is not a valid address", retryable=False) from None
        if self._local_hostname is None:
            # aiosmtplib would look the name up (a DNS query) on every connection.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        try:
            # aiosmtplib's timeout is per command; this one bounds the whole conversation.
            async with asyncio.timeout(self.timeout):
                await self._send(mail, address)
        except DeliveryError:
            raise
        except TimeoutError:
            raise DeliveryError(f"SMTP timed out after {self.timeout}s", retryable=True) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            raise _recipient_refused(codes[0] if codes else 550) from None
        except aiosmtplib.SMTPRecipientRefused as exc:
            raise _recipient_refused(exc.code) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _smtp_response_error(exc) from None
        except aiosmtplib.SMTPNotSupported:
            raise DeliveryError(
                "SMTP server does not support a required extension (STARTTLS or AUTH)",
                retryable=False,
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            if _caused_by_certificate(exc):
                # A certificate is not fixed within a retry schedule; an operator must look.
                raise DeliveryError(
                    "SMTP TLS certificate verification failed", retryable=False
                ) from None
            raise DeliveryError(
                f"SMTP connection failed ({type(exc).__name__})", retryable=True
            ) from None

    async def _send(self, mail: EmailMessage, address: str) -> None:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.use_tls,
            # None upgrades when the server offers STARTTLS; True fails when it does not.
            start_tls=True if self.starttls else (False if self.use_tls else None),
            tls_context=self._tls_context,
            local_hostname=self._local_hostname,
        )
        # No credentials given to connect(): it would log in before we could see the TLS state.
        await client.connect()
        try:
            secure = client.get_transport_info("sslcontext") is not None
            if not secure and self.require_tls:
                raise DeliveryError(SMTP_TLS_REQUIRED, retryable=False)
            if self._username is not None and self._password is not None:
                if not secure:
                    raise DeliveryError(SMTP_AUTH_NEEDS_TLS, retryable=False)
                await client.login(self._username, self._password)
            await client.send_message(mail, sender=self.sender, recipients=[address])
            with contextlib.suppress(aiosmtplib.SMTPException):
                await client.quit()
        finally:
            client.close()

    async def close(self) -> None:
        """Nothing to release: each e-mail uses its own connection."""


def _plain_address(target: str) -> str | None:
    # The bare address only: a display name is not ours to echo, and a CR or LF would let a
    # target inject headers.
    if "\r" in target or "\n" in target:
        return None
    _, address = parseaddr(target)
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or any(c.isspace() for c in address):
        return None
    return address


def _caused_by_certificate(exc: BaseException) -> bool:
    # STARTTLS raises the ssl error itself; implicit TLS wraps it in SMTPConnectError.
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _recipient_refused(code: int) -> DeliveryError:
    if 400 <= code < 500:
        return DeliveryError(f"SMTP server deferred the recipient ({code})", retryable=True)
    return DeliveryError(f"SMTP server refused the recipient ({code})", retryable=False)


def _smtp_response_error(exc: aiosmtplib.SMTPResponseException) -> DeliveryError:
    code = exc.code
    if code == 530:
        # RFC 4954/3207: whatever command it answered, the server wants AUTH or STARTTLS first.
        what = "SMTP server requires authentication or STARTTLS"
    elif isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        what = "SMTP authentication failed"
    elif isinstance(exc, aiosmtplib.SMTPSenderRefused):
        what = "SMTP server refused the sender"
    elif isinstance(exc, aiosmtplib.SMTPDataError):
        what = "SMTP server refused the message"
    else:
        what = "SMTP server answered"
    # 4xx is a transient failure by RFC 5321; anything else (5xx, or a reply code the client
    # could not read) will not get better by itself.
    return DeliveryError(f"{what} ({code})", retryable=400 <= code < 500)


class ConsoleChannel:
    """One line per message on a text stream: for the demo and local runs."""

    kind = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        # None means sys.stdout as it is at delivery time, so redirection set up later works.
        self._stream = stream

    async def deliver(self, target: str, message: Message) -> None:
        """Write the message; `target` is a label such as "patient", not contact data."""
        stream = self._stream if self._stream is not None else sys.stdout
        line = f"[medstream → {target}] {message.subject}: {message.text}"
        stream.write(" ".join(line.split()) + "\n")
        stream.flush()

    async def close(self) -> None:
        """Nothing to release: the stream belongs to the caller."""


def keep_apprise_logs_private() -> None:
    """Stop Apprise's log records reaching the application's handlers.

    Apprise logs service hosts and response details, which identify the person notified. Its
    per-call log capture still works: that handler sits on the "apprise" logger itself.
    """
    logging.getLogger("apprise").propagate = False


class AppriseChannel:
    """Any service Apprise supports (Slack, Telegram, SMS gateways...); target is an Apprise URL.

    Apprise is blocking, so it runs on this channel's own threads, which keeps slow services
    from starving the event loop's default executor.

    Only the URL schemes in `schemes` are accepted (none by default). A service whose URL names
    a host of its own (json://, ntfy://, mailto://...) may only name one whose addresses the
    policy allows; Apprise resolves it again when it connects, and may follow redirects, so
    only schemes of fixed services (tgram, pover...) are safe without an allow-list.
    """

    kind = "apprise"

    def __init__(
        self,
        timeout: float,
        *,
        max_workers: int = 8,
        private_logs: bool = True,
        schemes: Iterable[str] = (),
        policy: TargetPolicy | None = None,
    ) -> None:
        import apprise  # noqa: F401 -- fails at wiring time, not at the first delivery

        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.schemes = frozenset(scheme.strip().lower() for scheme in schemes if scheme.strip())
        self.policy = policy if policy is not None else TargetPolicy()
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="medstream-apprise"
        )
        if private_logs:
            keep_apprise_logs_private()

    async def deliver(self, target: str, message: Message) -> None:
        """Notify the Apprise URL `target`."""
        loop = asyncio.get_running_loop()
        try:
            # A little beyond Apprise's own limit, which is what actually stops the thread.
            async with asyncio.timeout(self.timeout + 1.0):
                await loop.run_in_executor(self._executor, self._notify, target, message)
        except TimeoutError:
            raise DeliveryError(
                f"apprise timed out after {self.timeout}s", retryable=True
            ) from None

    def _notify(self, target: str, message: Message) -> None:
        import apprise

        scheme, separator, _rest = target.partition("://")
        if not separator or scheme.lower() not in self.schemes:
            raise DeliveryError(APPRISE_REFUSED, retryable=False)
        service = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory"))
        if not service.add(target):
            raise DeliveryError("apprise target is not a valid Apprise URL", retryable=False)
        for plugin in service:
            self._vet_hosts(plugin)
        urgent = message.body.get("event_type") in ("DoseMissed", "InteractionWarning")
        try:
            result = service.notify(
                body=message.text,
                title=message.subject,
                notify_type=apprise.NotifyType.WARNING if urgent else apprise.NotifyType.INFO,
                body_format=apprise.NotifyFormat.TEXT,
                timeout=self.timeout,
            )
        except Exception as exc:
            raise DeliveryError(f"apprise raised {type(exc).__name__}", retryable=True) from None
        if not result:
            raise DeliveryError(f"apprise delivery failed ({result.status.name})", retryable=True)

    def _vet_hosts(self, plugin: object) -> None:
        # A service "has a host" when its URL template has one (Apprise's own description);
        # e-mail also names the SMTP server it will use.
        if "host" not in getattr(type(plugin), "template_tokens", {}):
            return
        for host in {getattr(plugin, "host", None), getattr(plugin, "smtp_host", None)}:
            if not isinstance(host, str) or not host:
                continue
            host = host.strip("[]")
            literal = literal_address(host)
            if literal is not None:
                addresses: list[str] = [str(literal)]
            else:
                try:
                    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
                except (OSError, UnicodeError):
                    log.debug("apprise host did not resolve")
                    raise DeliveryError("apprise delivery failed", retryable=True) from None
                addresses = [str(info[4][0]) for info in infos]
            refusal = address_refusal(host, addresses, self.policy)
            if refusal is not None:
                log.debug("apprise target refused: %s", refusal.value)
                raise DeliveryError(APPRISE_REFUSED, retryable=False)

    async def close(self) -> None:
        """Stop the worker threads once running notifications end."""
        await asyncio.to_thread(self._executor.shutdown, wait=True)
