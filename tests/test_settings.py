"""Settings are read once, validated, and every problem is reported at once."""

from __future__ import annotations

import pytest

from core.settings import SettingsError, load_settings

BASE = {"APP_ENV": "test", "JWT_SECRET": "local-dev-secret", "POSTGRES_PASSWORD": "x"}


def test_the_defaults_are_valid():
    settings = load_settings(BASE)
    assert settings.kafka_session_timeout_ms == 10000 and settings.db_statement_timeout_ms == 15000


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"KAFKA_SESSION_TIMEOUT_MS": "3000"}, "KAFKA_SESSION_TIMEOUT_MS must be at least 6000"),
        ({"KAFKA_HEARTBEAT_INTERVAL_MS": "5000"}, "at most a third of KAFKA_SESSION_TIMEOUT_MS"),
        ({"KAFKA_MAX_POLL_INTERVAL_MS": "7000"}, "KAFKA_MAX_POLL_INTERVAL_MS must be at least"),
        ({"DB_STATEMENT_TIMEOUT_MS": "0"}, "DB_STATEMENT_TIMEOUT_MS must be positive"),
        ({"DB_LOCK_TIMEOUT_MS": "soon"}, "DB_LOCK_TIMEOUT_MS='soon' is not a valid int"),
        ({"APP_ENV": "production"}, "JWT_SECRET='local-dev-secret' is only allowed"),
        ({"APP_ENV": "production", "JWT_SECRET": "short-but-not-the-dev-one"}, "at least 32 bytes in production"),
        (
            {"APP_ENV": "production", "JWT_ALGORITHM": "RS256", "JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----"},
            "JWT_AUDIENCE and JWT_ISSUER are required in production",
        ),
        ({"JWT_MAX_TTL_SECONDS": "0"}, "JWT_MAX_TTL_SECONDS must be positive"),
    ],
)
def test_a_bad_value_is_named(changes, problem):
    with pytest.raises(SettingsError, match=problem):
        load_settings({**BASE, **changes})


def test_production_accepts_a_long_secret():
    settings = load_settings({**BASE, "APP_ENV": "production", "JWT_SECRET": "x" * 32})
    assert not settings.is_development


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE, "POSTGRES_PORT": "x", "CACHE_TTL_SECONDS": "0", "JWT_ALGORITHM": "none"})
    message = str(caught.value)
    for problem in ("POSTGRES_PORT='x' is not a valid int", "CACHE_TTL_SECONDS must be positive", "JWT_ALGORITHM"):
        assert problem in message
