"""The one settings object of medstream, read from MEDSTREAM_* environment variables."""

from __future__ import annotations

import json
from enum import Enum, StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.contracts.models import parse_time_of_day
from streams.notify.targets import parse_allow_list

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# Shorter bearer tokens can be guessed; 32 characters is what `openssl rand -hex 16` gives.
ADMIN_TOKEN_MIN_LENGTH = 32


# The FHIR intake's clock-time rules (docs/fhir.md): doses per day to local times, and FHIR
# Timing `when` codes (event timing, R4 value set) to local times.
DEFAULT_FHIR_FREQUENCY_TIMES = json.dumps(
    {
        "1": ["09:00"],
        "2": ["09:00", "21:00"],
        "3": ["08:00", "14:00", "20:00"],
        "4": ["08:00", "12:00", "16:00", "20:00"],
    },
    sort_keys=True,
)
DEFAULT_FHIR_WHEN_TIMES = json.dumps(
    {
        "WAKE": ["07:00"],
        "MORN": ["08:00"],
        "MORN.early": ["06:00"],
        "MORN.late": ["10:00"],
        "NOON": ["12:00"],
        "AFT": ["15:00"],
        "AFT.early": ["13:00"],
        "AFT.late": ["17:00"],
        "EVE": ["19:00"],
        "EVE.early": ["18:00"],
        "EVE.late": ["20:00"],
        "NIGHT": ["22:00"],
        "HS": ["22:00"],
        "C": ["08:00", "12:00", "18:00"],
        "CM": ["08:00"],
        "CD": ["12:00"],
        "CV": ["18:00"],
        "AC": ["07:30", "11:30", "17:30"],
        "ACM": ["07:30"],
        "ACD": ["11:30"],
        "ACV": ["17:30"],
        "PC": ["08:30", "12:30", "18:30"],
        "PCM": ["08:30"],
        "PCD": ["12:30"],
        "PCV": ["18:30"],
    },
    sort_keys=True,
)


def _time_table(text: str) -> dict[str, list[str]]:
    """A JSON object of lists of distinct 'HH:MM' times (a FHIR time rule), checked."""
    try:
        table = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("must be a JSON object") from None
    if not isinstance(table, dict) or not table:
        raise ValueError("must be a non-empty JSON object")
    for times in table.values():
        if not isinstance(times, list) or not all(isinstance(t, str) for t in times):
            raise ValueError("every value must be a list of 'HH:MM' times")
        if len({parse_time_of_day(t) for t in times}) != len(times):
            raise ValueError("times must not repeat")
    return table


class SecurityProtocol(StrEnum):
    """How clients talk to the brokers."""

    PLAINTEXT = "PLAINTEXT"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"
    SSL = "SSL"


class OutputEncoding(StrEnum):
    """How medstream encodes the events it publishes."""

    JSON = "json"
    AVRO = "avro"


class Settings(BaseSettings):
    """Everything configurable in medstream.

    Each field is read from the environment variable named beside it (``MEDSTREAM_`` plus the
    field name in upper case). The README lists them all. Build it with ``Settings()`` at the
    edge of the program (the CLI, a test fixture), never at import time.
    """

    model_config = SettingsConfigDict(
        env_prefix="MEDSTREAM_",
        frozen=True,
        extra="forbid",
        validate_default=True,
        # An error must not print what was given: it may be a token or a password.
        hide_input_in_errors=True,
    )

    # --- Kafka clients -------------------------------------------------------------------
    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="MEDSTREAM_BOOTSTRAP_SERVERS: comma-separated host:port list of brokers.",
    )
    security_protocol: SecurityProtocol = Field(
        SecurityProtocol.PLAINTEXT,
        description="MEDSTREAM_SECURITY_PROTOCOL: PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL.",
    )
    sasl_mechanism: str = Field(
        "SCRAM-SHA-512",
        description="MEDSTREAM_SASL_MECHANISM: SASL mechanism when a SASL protocol is used.",
    )
    sasl_username: str | None = Field(None, description="MEDSTREAM_SASL_USERNAME: SASL user name.")
    sasl_password: SecretStr | None = Field(
        None, description="MEDSTREAM_SASL_PASSWORD: SASL password (never printed)."
    )
    ssl_cafile: Path | None = Field(
        None, description="MEDSTREAM_SSL_CAFILE: CA bundle that signed the brokers' certificates."
    )

    # --- Topics and the Faust app ----------------------------------------------------------
    app_id: str = Field(
        "medstream",
        description="MEDSTREAM_APP_ID: Faust application id; also the consumer group id.",
    )
    topic_prefix: str = Field(
        "",
        description="MEDSTREAM_TOPIC_PREFIX: prepended to every topic name (e.g. 'prod.').",
    )
    topic_partitions: int = Field(
        4, ge=1, description="MEDSTREAM_TOPIC_PARTITIONS: partitions of every topic created."
    )
    topic_replication_factor: int = Field(
        1, ge=1, description="MEDSTREAM_TOPIC_REPLICATION_FACTOR: replicas of every topic."
    )
    consumer_session_timeout: float = Field(
        30.0,
        ge=6,
        description="MEDSTREAM_CONSUMER_SESSION_TIMEOUT: seconds before a silent worker is "
        "presumed dead and its partitions move.",
    )
    store_url: str = Field(
        "rocksdb://",
        description="MEDSTREAM_STORE_URL: table store, 'rocksdb://' or 'memory://'.",
    )
    data_dir: Path = Field(
        Path("var/worker"),
        description="MEDSTREAM_DATA_DIR: where the worker keeps its tables (RocksDB).",
    )
    rocksdb_block_cache_mb: int = Field(
        32,
        ge=1,
        description=(
            "MEDSTREAM_ROCKSDB_BLOCK_CACHE_MB: read cache of each table partition's RocksDB "
            "store (Faust's own default, 2048 each, let a worker's memory grow by gigabytes)."
        ),
    )
    rocksdb_write_buffer_mb: int = Field(
        16,
        ge=1,
        description=(
            "MEDSTREAM_ROCKSDB_WRITE_BUFFER_MB: each of the three write buffers of each table "
            "partition's RocksDB store (Faust's own default: 64)."
        ),
    )
    web_host: str = Field(
        "127.0.0.1", description="MEDSTREAM_WEB_HOST: interface of the worker's web server."
    )
    web_port: int = Field(
        6066, ge=1, le=65535, description="MEDSTREAM_WEB_PORT: port of the worker's web server."
    )
    web_enabled: bool = Field(
        True, description="MEDSTREAM_WEB_ENABLED: run the worker's web server."
    )
    admin_token: SecretStr | None = Field(
        None,
        description=(
            "MEDSTREAM_ADMIN_TOKEN: bearer token of the web server's /admin endpoints (pause, "
            f"resume, replay); unset, they are off; set, it needs {ADMIN_TOKEN_MIN_LENGTH} "
            "characters or more (an empty or short token is refused at start)."
        ),
    )
    partition_stall_seconds: float = Field(
        120.0,
        gt=0,
        description=(
            "MEDSTREAM_PARTITION_STALL_SECONDS: a partition with lag whose consumed offset has "
            "not moved for this long is stalled (/ready answers 503)."
        ),
    )
    agent_crash_window_seconds: float = Field(
        300.0,
        gt=0,
        description=(
            "MEDSTREAM_AGENT_CRASH_WINDOW_SECONDS: after a crash, an agent is down (/ready 503) "
            "until it has run this long without crashing; a second crash within it stops the "
            "worker with exit code 1."
        ),
    )
    shutdown_timeout_seconds: float = Field(
        25.0,
        gt=0,
        le=120,
        description=(
            "MEDSTREAM_SHUTDOWN_TIMEOUT_SECONDS: after SIGTERM or SIGINT the worker exits within "
            "this long, broker reachable or not (a watchdog ends a stop that still hangs)."
        ),
    )
    log_level: str = Field(
        "info", description="MEDSTREAM_LOG_LEVEL: debug, info, warning or error."
    )
    batch_max_events: int = Field(
        500,
        ge=1,
        description=(
            "MEDSTREAM_BATCH_MAX_EVENTS: most events an agent handles before it writes their "
            "state and acknowledgements once for all of them."
        ),
    )
    batch_window_ms: float = Field(
        10.0,
        gt=0,
        le=1000,
        description=(
            "MEDSTREAM_BATCH_WINDOW_MS: the longest a batch stays open while records keep "
            "arriving; a batch also ends when no further record is waiting (adds at most this "
            "to each hop's latency)."
        ),
    )

    # --- The event contract ----------------------------------------------------------------
    output_encoding: OutputEncoding = Field(
        OutputEncoding.JSON,
        description="MEDSTREAM_OUTPUT_ENCODING: 'json' or 'avro' (single-object) for outputs.",
    )
    schema_registry_url: str | None = Field(
        None,
        description="MEDSTREAM_SCHEMA_REGISTRY_URL: registry for Confluent-framed input, if any.",
    )
    schema_registry_timeout: float = Field(
        5.0, gt=0, description="MEDSTREAM_SCHEMA_REGISTRY_TIMEOUT: seconds per registry request."
    )
    dead_letter_retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description=(
            "MEDSTREAM_DEAD_LETTER_RETENTION_DAYS: days the dead-letters topic keeps a record "
            "(its raw payload is patient data), set when `topics create` makes the topic; "
            "replay a dead letter before then."
        ),
    )
    dedup_retention_days: int = Field(
        30,
        ge=1,
        description=(
            "MEDSTREAM_DEDUP_RETENTION_DAYS: days event_ids (per patient) and final delivery "
            "records are remembered."
        ),
    )
    dedup_max_ids_per_patient: int = Field(
        5000,
        ge=10,
        description="MEDSTREAM_DEDUP_MAX_IDS_PER_PATIENT: most event_ids remembered per patient.",
    )

    # --- Bounds on what one input may make ------------------------------------------------
    max_clock_skew_seconds: float = Field(
        300.0,
        gt=0,
        description=(
            "MEDSTREAM_MAX_CLOCK_SKEW_SECONDS: an event dated further ahead of the worker's "
            "clock than this is dead-lettered (it would move the de-duplication horizon)."
        ),
    )
    max_active_medications: int = Field(
        200,
        ge=1,
        le=5000,
        description=(
            "MEDSTREAM_MAX_ACTIVE_MEDICATIONS: most active medications (and schedules) per "
            "patient; a prescription beyond it is dead-lettered."
        ),
    )
    max_times_per_schedule: int = Field(
        24,
        ge=1,
        le=48,
        description="MEDSTREAM_MAX_TIMES_PER_SCHEDULE: most times_of_day in one ScheduleSet.",
    )
    max_name_length: int = Field(
        200,
        ge=1,
        le=1000,
        description="MEDSTREAM_MAX_NAME_LENGTH: longest medication name, in characters.",
    )
    max_unit_length: int = Field(
        50,
        ge=1,
        le=1000,
        description="MEDSTREAM_MAX_UNIT_LENGTH: longest dose unit, in characters.",
    )
    max_patient_record_bytes: int = Field(
        512 * 1024,
        ge=16 * 1024,
        le=900 * 1024,
        description=(
            "MEDSTREAM_MAX_PATIENT_RECORD_BYTES: largest encoded patient record (state, seen "
            "ids and unsent outputs); an event that would make it larger is dead-lettered. "
            "Must stay below the broker's message.max.bytes (1 MiB by default)."
        ),
    )
    state_cache_patients: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description=(
            "MEDSTREAM_STATE_CACHE_PATIENTS: parsed records of this many recently written "
            "patients are kept in memory, so their next events skip the RocksDB read and the "
            "JSON decode (0 keeps none; a few KiB each)."
        ),
    )
    dead_letter_max_value_bytes: int = Field(
        512 * 1024,
        ge=1024,
        le=640 * 1024,
        description=(
            "MEDSTREAM_DEAD_LETTER_MAX_VALUE_BYTES: a failed record's value is kept whole in "
            "its dead letter up to this size, else cut to it (its length and SHA-256 kept), "
            "so that the dead letter always fits the broker's limit."
        ),
    )

    # --- Reminders and interactions -------------------------------------------------------
    reminder_grace_minutes: float = Field(
        30.0,
        gt=0,
        description=(
            "MEDSTREAM_REMINDER_GRACE_MINUTES: wait for a dose before DoseMissed; a DoseTaken "
            "or DoseSkipped up to this long after its slot still answers it."
        ),
    )
    dose_answer_early_minutes: float = Field(
        60.0,
        ge=0,
        le=720,
        description=(
            "MEDSTREAM_DOSE_ANSWER_EARLY_MINUTES: a DoseTaken or DoseSkipped up to this long "
            "before its slot already answers it (no ReminderDue, no DoseMissed for it)."
        ),
    )
    reminder_catch_up_minutes: float = Field(
        60.0,
        ge=0,
        description="MEDSTREAM_REMINDER_CATCH_UP_MINUTES: missed slots a restart still reminds.",
    )
    reminder_tick_seconds: float = Field(
        0.2,
        gt=0,
        le=1.0,
        description="MEDSTREAM_REMINDER_TICK_SECONDS: how often each worker's timer looks.",
    )
    interactions_ddinter_csv: Path | None = Field(
        None,
        description="MEDSTREAM_INTERACTIONS_DDINTER_CSV: extra interactions, DDInter CSV format.",
    )

    # --- FHIR intake (streams/fhir/, docs/fhir.md) ------------------------------------------
    fhir_patient_identifier_system: str | None = Field(
        None,
        description=(
            "MEDSTREAM_FHIR_PATIENT_IDENTIFIER_SYSTEM: when set, a FHIR resource's patient_id is "
            "the value of the Patient's identifier with this system; unset, the logical id of "
            "the subject reference."
        ),
    )
    fhir_default_timezone: str = Field(
        "UTC",
        description=(
            "MEDSTREAM_FHIR_DEFAULT_TIMEZONE: IANA zone of FHIR schedules when the Patient has "
            "no timezone extension."
        ),
    )
    fhir_frequency_times: str = Field(
        DEFAULT_FHIR_FREQUENCY_TIMES,
        description=(
            "MEDSTREAM_FHIR_FREQUENCY_TIMES: JSON object from doses per day ('1' to '24') to "
            "that many local times, for FHIR timings given as frequency per day."
        ),
    )
    fhir_interval_start: str = Field(
        "06:00",
        description=(
            "MEDSTREAM_FHIR_INTERVAL_START: first local time of FHIR timings given as every N "
            "hours (q4h, q6h, q8h, q12h); the others follow every N hours."
        ),
    )
    fhir_when_times: str = Field(
        DEFAULT_FHIR_WHEN_TIMES,
        description=(
            "MEDSTREAM_FHIR_WHEN_TIMES: JSON object from FHIR Timing `when` codes (MORN, HS, "
            "ACM, ...) to lists of local times."
        ),
    )

    # --- Notifications ---------------------------------------------------------------------
    notify_webhook_secret: SecretStr | None = Field(
        None,
        description="MEDSTREAM_NOTIFY_WEBHOOK_SECRET: HMAC-SHA256 key that signs webhooks.",
    )
    notify_webhook_allow: str = Field(
        "",
        description=(
            "MEDSTREAM_NOTIFY_WEBHOOK_ALLOW: comma-separated host names and CIDRs inside the "
            "network that webhooks (and Apprise URLs) may reach; every other loopback, private, "
            "link-local or otherwise non-public address is refused. Cloud metadata never."
        ),
    )
    notify_webhook_allow_http: bool = Field(
        False,
        description="MEDSTREAM_NOTIFY_WEBHOOK_ALLOW_HTTP: allow http:// webhooks (https only).",
    )
    notify_smtp_host: str | None = Field(
        None, description="MEDSTREAM_NOTIFY_SMTP_HOST: SMTP server for e-mail notifications."
    )
    notify_smtp_port: int = Field(
        25, ge=1, le=65535, description="MEDSTREAM_NOTIFY_SMTP_PORT: SMTP server port."
    )
    notify_smtp_starttls: bool = Field(
        False,
        description=(
            "MEDSTREAM_NOTIFY_SMTP_STARTTLS: require STARTTLS (without it, STARTTLS is still "
            "used whenever the server offers it)."
        ),
    )
    notify_smtp_tls: bool = Field(
        False, description="MEDSTREAM_NOTIFY_SMTP_TLS: connect with implicit TLS (port 465)."
    )
    notify_smtp_require_tls: bool = Field(
        False,
        description=(
            "MEDSTREAM_NOTIFY_SMTP_REQUIRE_TLS: send no e-mail over a connection that is not "
            "TLS (implicit or STARTTLS). Credentials are never sent without TLS in any case."
        ),
    )
    notify_smtp_username: str | None = Field(
        None, description="MEDSTREAM_NOTIFY_SMTP_USERNAME: SMTP user, when authentication is on."
    )
    notify_smtp_password: SecretStr | None = Field(
        None, description="MEDSTREAM_NOTIFY_SMTP_PASSWORD: SMTP password (never printed)."
    )
    notify_email_sender: str = Field(
        "medstream@localhost", description="MEDSTREAM_NOTIFY_EMAIL_SENDER: the From address."
    )
    notify_timeout_seconds: float = Field(
        10.0, gt=0, description="MEDSTREAM_NOTIFY_TIMEOUT_SECONDS: limit of one delivery attempt."
    )
    notify_max_attempts: int = Field(
        5, ge=1, le=20, description="MEDSTREAM_NOTIFY_MAX_ATTEMPTS: attempts before giving up."
    )
    notify_backoff_base_seconds: float = Field(
        0.5, gt=0, description="MEDSTREAM_NOTIFY_BACKOFF_BASE_SECONDS: first retry delay bound."
    )
    notify_backoff_cap_seconds: float = Field(
        30.0, gt=0, description="MEDSTREAM_NOTIFY_BACKOFF_CAP_SECONDS: longest retry delay."
    )
    notify_concurrency: int = Field(
        200, ge=1, description="MEDSTREAM_NOTIFY_CONCURRENCY: deliveries in flight per worker."
    )
    notify_contact_wait_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "MEDSTREAM_NOTIFY_CONTACT_WAIT_SECONDS: how long a notification for a patient with "
            "no contact preferences yet waits for them before it is suppressed."
        ),
    )
    notify_console_enabled: bool = Field(
        False,
        description=(
            "MEDSTREAM_NOTIFY_CONSOLE_ENABLED: offer the console channel, which writes messages "
            "into the log (`medstream demo` turns it on); otherwise console contacts fail."
        ),
    )
    notify_apprise_schemes: str = Field(
        "",
        description=(
            "MEDSTREAM_NOTIFY_APPRISE_SCHEMES: comma-separated Apprise URL schemes patients may "
            "use (e.g. 'tgram,pover'); none by default."
        ),
    )

    # --- The local broker (`medstream broker ...`) ------------------------------------------
    broker_host: str = Field(
        "127.0.0.1", description="MEDSTREAM_BROKER_HOST: loopback address the broker binds."
    )
    broker_port: int = Field(
        9092, ge=1, le=65535, description="MEDSTREAM_BROKER_PORT: the broker's client port."
    )
    broker_controller_port: int = Field(
        9093,
        ge=1,
        le=65535,
        description="MEDSTREAM_BROKER_CONTROLLER_PORT: the KRaft controller port.",
    )
    broker_data_dir: Path = Field(
        Path("var/kafka"),
        description="MEDSTREAM_BROKER_DATA_DIR: log directory, pid file and broker log.",
    )
    broker_heap: str = Field(
        "512m", description="MEDSTREAM_BROKER_HEAP: JVM heap of the broker (-Xmx and -Xms)."
    )
    broker_kafka_version: str = Field(
        "4.0.2", description="MEDSTREAM_BROKER_KAFKA_VERSION: Apache Kafka server version."
    )
    broker_cache_dir: Path = Field(
        Path.home() / ".cache" / "medstream",
        description="MEDSTREAM_BROKER_CACHE_DIR: where the broker's class path is cached.",
    )
    broker_start_timeout: float = Field(
        90.0, gt=0, description="MEDSTREAM_BROKER_START_TIMEOUT: seconds to wait for readiness."
    )

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty variable is a mistake, not "off": it must not turn the endpoints on.
        if value is not None and len(value.get_secret_value().strip()) < ADMIN_TOKEN_MIN_LENGTH:
            raise ValueError(
                f"MEDSTREAM_ADMIN_TOKEN must be at least {ADMIN_TOKEN_MIN_LENGTH} characters "
                "(unset it to turn the admin endpoints off)"
            )
        return value

    @field_validator("notify_webhook_allow")
    @classmethod
    def _allow_list(cls, value: str) -> str:
        hosts, networks = parse_allow_list(value)
        return ",".join([*hosts, *(str(network) for network in networks)])

    @field_validator("notify_apprise_schemes")
    @classmethod
    def _scheme_list(cls, value: str) -> str:
        schemes = [part.strip().lower() for part in value.split(",") if part.strip()]
        if any(not scheme.isascii() or not scheme.isalnum() for scheme in schemes):
            raise ValueError("expected a comma-separated list of URL schemes such as 'tgram'")
        return ",".join(schemes)

    @field_validator("fhir_patient_identifier_system")
    @classmethod
    def _fhir_identifier_system(cls, value: str | None) -> str | None:
        # An empty variable is a mistake, not "off": no identifier would ever match it.
        if value is not None and not value.strip():
            raise ValueError("must be an identifier system URI, or unset")
        return value

    @field_validator("fhir_default_timezone")
    @classmethod
    def _fhir_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown IANA time zone") from None
        return value

    @field_validator("fhir_interval_start")
    @classmethod
    def _fhir_interval_start(cls, value: str) -> str:
        parse_time_of_day(value)
        return value

    @field_validator("fhir_frequency_times")
    @classmethod
    def _fhir_frequency_table(cls, value: str) -> str:
        table = _time_table(value)
        for key, times in table.items():
            if not key.isdigit() or not 1 <= int(key) <= 24:
                raise ValueError("keys must be doses per day, '1' to '24'")
            if len(times) != int(key):
                raise ValueError(f"doses per day {key} needs exactly {key} times")
        return json.dumps(table, sort_keys=True)

    @field_validator("fhir_when_times")
    @classmethod
    def _fhir_when_table(cls, value: str) -> str:
        table = _time_table(value)
        if any(not times for times in table.values()):
            raise ValueError("every `when` code needs at least one time")
        return json.dumps(table, sort_keys=True)

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",") if part.strip()]
        if not servers or any(":" not in server for server in servers):
            raise ValueError("expected a comma-separated list of host:port")
        return ",".join(servers)

    @property
    def bootstrap_server_list(self) -> list[str]:
        """The brokers as a list of host:port strings."""
        return self.bootstrap_servers.split(",")

    def topic_name(self, base_name: str) -> str:
        """The full name of a topic in this deployment."""
        return f"{self.topic_prefix}{base_name}"

    def environment(self) -> dict[str, str]:
        """These settings as the MEDSTREAM_* variables that give them back: what a worker
        process started from these settings needs (secrets included, so keep it private)."""
        variables = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, Enum):
                value = value.value
            variables[f"MEDSTREAM_{name.upper()}"] = str(value)
        return variables
