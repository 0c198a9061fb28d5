"""The HTTP service: a Flask application factory.

Modules never import an application object; they use ``current_app``. Extensions are created
unbound in :mod:`app.extensions` and bound here. Clients (DB pool, Redis, Kafka broker) come from
:mod:`core.wiring`, built per process by the factory, which gunicorn calls in each worker after fork;
they and everything else the app builds once from its settings are one typed object,
:class:`app.services.Services` (``services()``, ``settings()``).
"""

from __future__ import annotations

from cachelib.serializers import JSONSerializer
from flask import Flask

from broker import Broker, set_broker
from core.settings import Settings, load_settings
from core.wiring import build_clients


def create_app(settings: Settings | None = None, *, broker: Broker | None = None) -> Flask:
    """Build the API. ``settings`` default to the environment; ``broker`` to Kafka from settings."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    register_services(app, settings, broker)
    register_extensions(app, settings)
    register_blueprints(app)
    register_errorhandlers(app)
    register_request_hooks(app)
    register_commands(app)
    register_tracing(app)  # before ProxyFix wraps the app: request spans see the client as it fixed it
    if settings.proxy_hops:  # the client's address and scheme as the load balancer saw them
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)  # type: ignore[method-assign]
    return app


def register_services(app: Flask, settings: Settings, broker: Broker | None) -> None:
    """The app's per-process state, built once from ``settings`` (:mod:`app.services`)."""
    from app import openapi
    from app.auth import build_key_set, build_verified_tokens
    from app.health import Readiness
    from app.overload import in_flight_limit
    from app.ratelimit import build_rate_limits
    from app.services import Services, register

    clients = build_clients(settings, broker=broker)
    set_broker(clients.broker)  # process_event.send() goes through the global broker
    services = Services(
        clients=clients,
        rate_limits=build_rate_limits(settings),
        readiness=Readiness(),
        openapi_spec=openapi.build_spec(),
        verified_tokens=build_verified_tokens(settings),
        jwks=build_key_set(settings),
        in_flight=in_flight_limit(settings.api_max_in_flight),
    )
    register(app, services)


def register_extensions(app: Flask, settings: Settings) -> None:
    from app.auth import configure_jwt
    from app.extensions import cache
    from app.services import services

    configure_jwt(app, settings)
    cache.init_app(
        app,
        config={
            "CACHE_TYPE": "RedisCache",
            "CACHE_REDIS_HOST": services(app).redis,  # share the client and its pool
            "CACHE_KEY_PREFIX": "",  # keys are exactly resource:{id}; never call cache.clear() (FLUSHDB)
            "CACHE_SERIALIZER": _JSONSerializer,  # plain JSON, never pickle (a class, not a dotted string)
            "CACHE_DEFAULT_TIMEOUT": settings.cache_ttl_seconds,
        },
    )


class _JSONSerializer(JSONSerializer):
    """cachelib's JSON serializer, minus a warning on every cache miss (it is handed ``None``)."""

    def loads(self, bvalue, *args, **kwargs):
        return None if bvalue is None else super().loads(bvalue, *args, **kwargs)


def register_tracing(app: Flask) -> None:
    """Request, PostgreSQL, Redis and enqueue spans when ``OTEL_*`` turns tracing on (core.tracing);
    with it off, nothing is installed."""
    from app.services import services
    from core import tracing

    provider = tracing.setup("device-api")
    if provider is None:
        return
    clients = services(app).clients
    tracing.instrument_app(app, provider)
    tracing.instrument_clients(clients, provider)
    tracing.trace_broker(clients.broker, provider)


def register_blueprints(app: Flask) -> None:
    from app import admin, events, health, metrics, openapi, resources

    for module in (health, events, resources, metrics, openapi, admin):
        app.register_blueprint(module.blueprint)


def register_errorhandlers(app: Flask) -> None:
    from app.errors import register_errorhandlers as register

    register(app)


def register_request_hooks(app: Flask) -> None:
    from app.overload import register_load_shedding
    from app.requestlog import register_request_hooks as register
    from app.services import services

    register(app)
    state = services(app)
    register_load_shedding(  # after the log's hooks
        app,
        state.in_flight,
        state.settings.api_max_loop_lag_ms,
        reads_first=bool(state.settings.api_reads_first),
        max_write_wait_ms=state.settings.api_max_write_wait_ms,
    )
    from app.ratelimit import register_refused_rate_limit

    register_refused_rate_limit(app)  # after the log's hooks too: the log records the 429


def register_commands(app: Flask) -> None:
    from app.commands import register_commands as register

    register(app)
