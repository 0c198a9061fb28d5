"""One settings object, read from environment variables once at start-up and validated.

Nothing else in the project reads ``os.environ``. Entry points (``wsgi.py``, ``worker.py``) call
:func:`load_settings` and pass the result down; tests build their own with overrides.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEV_JWT_SECRET = "local-dev-secret"
MIN_SECRET_BYTES = 32  # HS256's key should be at least its output size (RFC 7518 3.2)
ENVIRONMENTS = ("development", "test", "production")
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512")


class SettingsError(ValueError):
    """Raised at start-up with one line per bad or missing variable."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the environment variable each field comes from."""

    app_env: str = "production"  # APP_ENV
    log_level: str = "INFO"  # LOG_LEVEL

    postgres_host: str = "127.0.0.1"  # POSTGRES_HOST
    postgres_port: int = 5432  # POSTGRES_PORT
    postgres_user: str = "appuser"  # POSTGRES_USER
    postgres_password: str = ""  # POSTGRES_PASSWORD
    postgres_db: str = "appdb"  # POSTGRES_DB
    postgres_sslmode: str = "prefer"  # POSTGRES_SSLMODE
    db_pool_size: int = 10  # DB_POOL_SIZE
    db_max_overflow: int = 10  # DB_MAX_OVERFLOW
    db_connect_timeout_seconds: int = 5  # DB_CONNECT_TIMEOUT_SECONDS
    db_statement_timeout_ms: int = 15000  # DB_STATEMENT_TIMEOUT_MS (server-side, per statement)
    db_lock_timeout_ms: int = 5000  # DB_LOCK_TIMEOUT_MS (waiting for a row lock)
    db_keepalives_idle_seconds: int = 30  # DB_KEEPALIVES_IDLE_SECONDS (TCP keepalive: find dead peers)

    redis_url: str = "redis://127.0.0.1:6379/0"  # REDIS_URL
    cache_ttl_seconds: int = 60  # CACHE_TTL_SECONDS
    redis_timeout_seconds: float = 0.5  # REDIS_TIMEOUT_SECONDS

    kafka_bootstrap_servers: str = "127.0.0.1:9092"  # KAFKA_BOOTSTRAP_SERVERS
    kafka_security_protocol: str = "PLAINTEXT"  # KAFKA_SECURITY_PROTOCOL
    kafka_sasl_mechanism: str | None = None  # KAFKA_SASL_MECHANISM
    kafka_sasl_username: str | None = None  # KAFKA_SASL_USERNAME
    kafka_sasl_password: str | None = None  # KAFKA_SASL_PASSWORD
    kafka_ssl_cafile: str | None = None  # KAFKA_SSL_CAFILE
    kafka_client_id: str = "device-backend"  # KAFKA_CLIENT_ID
    kafka_topic_dlq: str = "events-dlq"  # KAFKA_TOPIC_DLQ
    kafka_assignor: str = "cooperative-sticky"  # KAFKA_ASSIGNOR (cooperative-sticky; range or roundrobin: eager)
    kafka_delay_topic_prefix: str = "events-delay"  # KAFKA_DELAY_TOPIC_PREFIX (topics <prefix>-1s ... <prefix>-1d)
    kafka_consumer_group: str = "events-processor"  # KAFKA_CONSUMER_GROUP
    kafka_send_timeout_ms: int = 5000  # KAFKA_SEND_TIMEOUT_MS
    kafka_session_timeout_ms: int = 10000  # KAFKA_SESSION_TIMEOUT_MS (a dead worker leaves the group after this)
    kafka_heartbeat_interval_ms: int = 300  # KAFKA_HEARTBEAT_INTERVAL_MS (how soon a member notices a rebalance)
    kafka_max_poll_interval_ms: int = 300000  # KAFKA_MAX_POLL_INTERVAL_MS
    kafka_request_timeout_ms: int = 30000  # KAFKA_REQUEST_TIMEOUT_MS (consumer and admin requests)

    admin_session_seconds: int = 900  # ADMIN_SESSION_SECONDS (the /admin console's sign-in lifetime)
    admin_sign_in_per_minute: int = 10  # ADMIN_SIGN_IN_PER_MINUTE (console sign-in attempts per client address)

    cloudwatch_namespace: str = "DeviceBackend/Kafka"  # CLOUDWATCH_NAMESPACE (`worker.py lag --publish cloudwatch`)

    jwt_algorithm: str = "HS256"  # JWT_ALGORITHM
    jwt_secret: str | None = None  # JWT_SECRET (HS*)
    jwt_public_key: str | None = None  # JWT_PUBLIC_KEY (RS*: PEM text, or a path to a PEM file)
    jwt_jwks_url: str | None = None  # JWT_JWKS_URL (RS*: the identity provider's keys, by kid)
    jwt_jwks_cache_seconds: int = 300  # JWT_JWKS_CACHE_SECONDS (the key set is fetched again this often)
    jwt_leeway_seconds: int = 30  # JWT_LEEWAY_SECONDS (clock skew allowed on exp, nbf, iat)
    jwt_max_ttl_seconds: int = 86400  # JWT_MAX_TTL_SECONDS (exp - iat, or exp - now without iat)
    jwt_audience: str | None = None  # JWT_AUDIENCE (checked against aud when set)
    jwt_issuer: str | None = None  # JWT_ISSUER (checked against iss when set)
    jwt_verified_cache_seconds: int = 60  # JWT_VERIFIED_CACHE_SECONDS (a verified token skips decoding; 0: off)

    max_body_bytes: int = 64 * 1024  # MAX_BODY_BYTES
    proxy_hops: int = 0  # PROXY_HOPS (proxies in front that set X-Forwarded-For/-Proto: 1 behind an ALB)
    api_max_in_flight: int = 256  # API_MAX_IN_FLIGHT (per API process; beyond it: 503 + Retry-After; 0: off)
    api_max_loop_lag_ms: int = 500  # API_MAX_LOOP_LAG_MS (an API process's event loop this late: 503; 0: off)
    api_reads_first: int = 0  # API_READS_FIRST (1: a write's CPU waits for the ready reads; 0: off, the default)
    api_max_write_wait_ms: int = 500  # API_MAX_WRITE_WAIT_MS (writes queued behind reads this long: 503; 0: off)
    rate_limit_events: str = "100/5 seconds"  # RATE_LIMIT_EVENTS (per device and per token subject)
    rate_limit_refused: str = "50/5 seconds"  # RATE_LIMIT_REFUSED (refused requests per client address)
    idempotency_ttl_seconds: int = 86400  # IDEMPOTENCY_TTL_SECONDS (how long an Idempotency-Key's answer is kept)
    idempotency_max_keys_per_subject: int = 100000  # IDEMPOTENCY_MAX_KEYS_PER_SUBJECT (new keys per TTL)

    @property
    def is_development(self) -> bool:
        return self.app_env in ("development", "test")

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL; the password is URL-quoted so any character works."""
        from sqlalchemy import URL

        return URL.create(
            "postgresql+psycopg2",
            username=self.postgres_user,
            password=self.postgres_password or None,
            host=self.postgres_host,
            port=self.postgres_port,
            database=self.postgres_db,
            query={"sslmode": self.postgres_sslmode},
        ).render_as_string(hide_password=False)

    @property
    def kafka_options(self) -> dict[str, Any]:
        """Connection options shared by producer, consumer and admin clients."""
        return {
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
            "sasl_mechanism": self.kafka_sasl_mechanism,
            "sasl_username": self.kafka_sasl_username,
            "sasl_password": self.kafka_sasl_password,
            "ssl_cafile": self.kafka_ssl_cafile,
            "client_id": self.kafka_client_id,
        }

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _env_name(field_name: str) -> str:
    return field_name.upper()


def _parse(field: dataclasses.Field, raw: str) -> Any:
    kind = field.type
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    return raw


def _check(settings: Settings) -> list[str]:
    problems: list[str] = []

    def need(cond: bool, message: str) -> None:
        if not cond:
            problems.append(message)

    need(settings.app_env in ENVIRONMENTS, f"APP_ENV must be one of {', '.join(ENVIRONMENTS)}")
    need(
        settings.kafka_security_protocol in KAFKA_SECURITY_PROTOCOLS,
        f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}",
    )
    if settings.kafka_security_protocol.startswith("SASL"):
        need(
            settings.kafka_sasl_mechanism in KAFKA_SASL_MECHANISMS,
            f"KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)} with SASL",
        )
        need(bool(settings.kafka_sasl_username), "KAFKA_SASL_USERNAME is required with SASL")
        need(bool(settings.kafka_sasl_password), "KAFKA_SASL_PASSWORD is required with SASL")
    if settings.kafka_ssl_cafile:
        need(os.path.isfile(settings.kafka_ssl_cafile), f"KAFKA_SSL_CAFILE {settings.kafka_ssl_cafile!r} is not a file")
    need(settings.kafka_send_timeout_ms >= 500, "KAFKA_SEND_TIMEOUT_MS must be at least 500")
    need(
        settings.kafka_session_timeout_ms >= 6000,
        "KAFKA_SESSION_TIMEOUT_MS must be at least 6000 (Kafka's group.min.session.timeout.ms)",
    )
    need(
        0 < settings.kafka_heartbeat_interval_ms * 3 <= settings.kafka_session_timeout_ms,
        "KAFKA_HEARTBEAT_INTERVAL_MS must be positive and at most a third of KAFKA_SESSION_TIMEOUT_MS",
    )
    need(
        settings.kafka_max_poll_interval_ms >= settings.kafka_session_timeout_ms,
        "KAFKA_MAX_POLL_INTERVAL_MS must be at least KAFKA_SESSION_TIMEOUT_MS",
    )
    need(settings.kafka_request_timeout_ms >= 1000, "KAFKA_REQUEST_TIMEOUT_MS must be at least 1000")
    for name in (
        "db_connect_timeout_seconds",
        "db_statement_timeout_ms",
        "db_lock_timeout_ms",
        "db_keepalives_idle_seconds",
    ):
        need(getattr(settings, name) > 0, f"{name.upper()} must be positive")
    need(settings.cache_ttl_seconds > 0, "CACHE_TTL_SECONDS must be positive")
    need(settings.admin_session_seconds > 0, "ADMIN_SESSION_SECONDS must be positive")
    need(settings.admin_sign_in_per_minute > 0, "ADMIN_SIGN_IN_PER_MINUTE must be positive")
    need(
        settings.kafka_assignor in ("cooperative-sticky", "range", "roundrobin"),
        "KAFKA_ASSIGNOR must be cooperative-sticky, range or roundrobin",
    )
    need(settings.max_body_bytes > 0, "MAX_BODY_BYTES must be positive")
    need(0 <= settings.proxy_hops <= 5, "PROXY_HOPS must be between 0 and 5")
    need(settings.api_max_in_flight >= 0, "API_MAX_IN_FLIGHT must be 0 (off) or positive")
    need(settings.api_max_loop_lag_ms >= 0, "API_MAX_LOOP_LAG_MS must be 0 (off) or positive")
    need(settings.api_reads_first in (0, 1), "API_READS_FIRST must be 0 (off) or 1 (on)")
    need(settings.api_max_write_wait_ms >= 0, "API_MAX_WRITE_WAIT_MS must be 0 (off) or positive")
    need(settings.idempotency_ttl_seconds >= 60, "IDEMPOTENCY_TTL_SECONDS must be at least 60")
    need(settings.idempotency_max_keys_per_subject > 0, "IDEMPOTENCY_MAX_KEYS_PER_SUBJECT must be positive")
    need(_valid_limits(settings.rate_limit_events), "RATE_LIMIT_EVENTS must read like '100/5 seconds;20/second'")
    need(_valid_limits(settings.rate_limit_refused), "RATE_LIMIT_REFUSED must read like '50/5 seconds'")
    need(
        settings.redis_url.startswith(("redis://", "rediss://", "unix://")),
        "REDIS_URL must start with redis://, rediss:// or unix://",
    )
    need(settings.jwt_algorithm in JWT_ALGORITHMS, f"JWT_ALGORITHM must be one of {', '.join(JWT_ALGORITHMS)}")
    need(settings.jwt_max_ttl_seconds > 0, "JWT_MAX_TTL_SECONDS must be positive")
    need(0 <= settings.jwt_leeway_seconds <= 300, "JWT_LEEWAY_SECONDS must be between 0 and 300")
    need(
        0 <= settings.jwt_verified_cache_seconds <= 3600,
        "JWT_VERIFIED_CACHE_SECONDS must be between 0 (off) and 3600",
    )
    need(
        1 <= settings.jwt_jwks_cache_seconds <= 3600,
        "JWT_JWKS_CACHE_SECONDS must be between 1 and 3600",
    )
    if settings.jwt_algorithm.startswith("HS"):
        if not settings.jwt_secret:
            problems.append("JWT_SECRET is required for HS* algorithms")
        elif settings.jwt_secret == DEV_JWT_SECRET and not settings.is_development:
            problems.append(f"JWT_SECRET={DEV_JWT_SECRET!r} is only allowed with APP_ENV=development or test")
        elif len(settings.jwt_secret.encode("utf-8")) < MIN_SECRET_BYTES and not settings.is_development:
            problems.append(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes in production")
    else:
        need(
            bool(settings.jwt_public_key or settings.jwt_jwks_url),
            "JWT_PUBLIC_KEY or JWT_JWKS_URL is required for RS* algorithms",
        )
        if settings.jwt_jwks_url:
            need(settings.jwt_jwks_url.startswith(("https://", "http://")), "JWT_JWKS_URL must be an http(s) URL")
        if not settings.is_development:
            need(
                bool(settings.jwt_audience and settings.jwt_issuer),
                "JWT_AUDIENCE and JWT_ISSUER are required in production with RS* (tokens of an identity provider)",
            )
    return problems


def _valid_limits(text: str) -> bool:
    from limits import parse_many

    try:
        return bool(parse_many(text))
    except ValueError:
        return False


def load_settings(environ: Mapping[str, str] | None = None, *, require_jwt: bool = True, **overrides: Any) -> Settings:
    """Build :class:`Settings` from ``environ`` (default: the process environment).

    ``require_jwt=False`` is for processes that verify no tokens (the worker, operator commands).
    Raises :class:`SettingsError` listing every problem at once.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field in dataclasses.fields(Settings):
        raw = environ.get(_env_name(field.name))
        if raw is None or raw == "":
            continue
        try:
            values[field.name] = _parse(field, raw)
        except ValueError:
            problems.append(f"{_env_name(field.name)}={raw!r} is not a valid {field.type}")
    values.update(overrides)
    settings = Settings(**values)
    if settings.jwt_public_key and not settings.jwt_public_key.lstrip().startswith("-----BEGIN"):
        settings = settings.replace(jwt_public_key=_read_file(settings.jwt_public_key, problems))
    checks = _check(settings)
    if not require_jwt:
        checks = [p for p in checks if not p.startswith("JWT_")]
    problems.extend(checks)
    if problems:
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems))
    return settings


def _read_file(path: str, problems: list[str]) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        problems.append(f"JWT_PUBLIC_KEY: cannot read {path!r}: {exc.strerror}")
        return None


ENV_VARIABLES: tuple[str, ...] = tuple(_env_name(f.name) for f in dataclasses.fields(Settings))
"""Every variable :func:`load_settings` reads (compose files and task definitions are checked against it)."""
